"""iam groups: groups, their members, and principal names long enough for group names (128)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:26:36.555243
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import sagestack.db.base  # noqa: F401  (custom column types such as UtcDateTime)


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('iam_groups',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('group_id', sa.String(length=32), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('created', sagestack.db.base.UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_iam_groups')),
    sa.UniqueConstraint('group_id', name=op.f('uq_iam_groups_group_id'))
    )
    op.create_table('iam_group_members',
    sa.Column('group_name', sa.String(length=128), nullable=False),
    sa.Column('user_name', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['group_name'], ['iam_groups.name'], name=op.f('fk_iam_group_members_group_name_iam_groups'), onupdate='CASCADE', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_name'], ['iam_users.name'], name=op.f('fk_iam_group_members_user_name_iam_users'), onupdate='CASCADE', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_name', 'user_name', name=op.f('pk_iam_group_members'))
    )
    with op.batch_alter_table('iam_group_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_iam_group_members_user_name'), ['user_name'], unique=False)

    with op.batch_alter_table('iam_inline_policies', schema=None) as batch_op:
        batch_op.alter_column('principal_name',
               existing_type=sa.VARCHAR(length=64),
               type_=sa.String(length=128),
               existing_nullable=False)

    with op.batch_alter_table('iam_policy_attachments', schema=None) as batch_op:
        batch_op.alter_column('principal_name',
               existing_type=sa.VARCHAR(length=64),
               type_=sa.String(length=128),
               existing_nullable=False)



def downgrade() -> None:
    with op.batch_alter_table('iam_policy_attachments', schema=None) as batch_op:
        batch_op.alter_column('principal_name',
               existing_type=sa.String(length=128),
               type_=sa.VARCHAR(length=64),
               existing_nullable=False)

    with op.batch_alter_table('iam_inline_policies', schema=None) as batch_op:
        batch_op.alter_column('principal_name',
               existing_type=sa.String(length=128),
               type_=sa.VARCHAR(length=64),
               existing_nullable=False)

    with op.batch_alter_table('iam_group_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iam_group_members_user_name'))

    op.drop_table('iam_group_members')
    op.drop_table('iam_groups')
