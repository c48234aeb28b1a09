"""IAM and STS state: the installation, users, groups, keys, roles, policies, sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow


class Installation(Base):
    """One row: the fixed identity of this sagestack installation."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IamUser(Base):
    __tablename__ = "iam_users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), unique=True)
    path: Mapped[str] = mapped_column(String(512), default="/")
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: The admin user made on first start; it may do everything and cannot be deleted.
    is_admin: Mapped[bool] = mapped_column(default=False)
    #: ARN of the managed policy that caps this user's permissions, if any.
    permissions_boundary: Mapped[str | None] = mapped_column(String(2048), nullable=True)


class AccessKey(Base):
    __tablename__ = "iam_access_keys"

    access_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # SigV4 needs the secret itself to recompute signatures, so it cannot be hashed.
    secret_access_key: Mapped[str] = mapped_column(String(64))
    # ON UPDATE CASCADE: UpdateUser may rename a user, and its keys follow.
    user_name: Mapped[str] = mapped_column(
        ForeignKey("iam_users.name", ondelete="CASCADE", onupdate="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="Active")
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: Last authenticated use (GetAccessKeyLastUsed); None until the key signs a request.
    last_used: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_service: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_used_region: Mapped[str | None] = mapped_column(String(32), nullable=True)


class IamRole(Base):
    __tablename__ = "iam_roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role_id: Mapped[str] = mapped_column(String(32), unique=True)
    path: Mapped[str] = mapped_column(String(512), default="/")
    assume_role_policy_document: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    max_session_duration: Mapped[int] = mapped_column(Integer, default=3600)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    permissions_boundary: Mapped[str | None] = mapped_column(String(2048), nullable=True)


class IamGroup(Base):
    __tablename__ = "iam_groups"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(32), unique=True)
    path: Mapped[str] = mapped_column(String(512), default="/")
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class GroupMember(Base):
    """One user in one group (AddUserToGroup); renames of either follow by ON UPDATE CASCADE."""

    __tablename__ = "iam_group_members"

    group_name: Mapped[str] = mapped_column(
        ForeignKey("iam_groups.name", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    user_name: Mapped[str] = mapped_column(
        ForeignKey("iam_users.name", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True, index=True
    )


class ManagedPolicy(Base):
    __tablename__ = "iam_managed_policies"

    arn: Mapped[str] = mapped_column(String(2048), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    policy_id: Mapped[str] = mapped_column(String(32), unique=True)
    path: Mapped[str] = mapped_column(String(512), default="/")
    description: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    #: The default version's document, kept here too so evaluation needs no join;
    #: every version (this one included) is in ``iam_policy_versions``.
    document: Mapped[str] = mapped_column(Text)
    default_version_id: Mapped[str] = mapped_column(String(16), default="v1")
    #: Version ids are never reused after DeletePolicyVersion, as in AWS, so keep a counter.
    next_version_number: Mapped[int] = mapped_column(Integer, default=2)
    #: True for the AWS-style policies shipped with sagestack (arn:aws:iam::aws:policy/...).
    aws_managed: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PolicyVersion(Base):
    """One version of a managed policy (at most five are kept, as in AWS)."""

    __tablename__ = "iam_policy_versions"
    __table_args__ = (UniqueConstraint("policy_arn", "version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_arn: Mapped[str] = mapped_column(
        ForeignKey("iam_managed_policies.arn", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[str] = mapped_column(String(16))
    document: Mapped[str] = mapped_column(Text)
    is_default: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class InlinePolicy(Base):
    """A policy embedded in one user, role or group (PutUserPolicy / PutRolePolicy / PutGroupPolicy)."""

    __tablename__ = "iam_inline_policies"
    __table_args__ = (UniqueConstraint("principal_type", "principal_name", "policy_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_type: Mapped[str] = mapped_column(String(8))  # "user" | "role" | "group"
    #: 128: group names may be that long (user and role names 64).
    principal_name: Mapped[str] = mapped_column(String(128))
    policy_name: Mapped[str] = mapped_column(String(128))
    document: Mapped[str] = mapped_column(Text)


class PolicyAttachment(Base):
    """A managed policy attached to one user, role or group."""

    __tablename__ = "iam_policy_attachments"
    __table_args__ = (UniqueConstraint("principal_type", "principal_name", "policy_arn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_type: Mapped[str] = mapped_column(String(8))  # "user" | "role" | "group"
    principal_name: Mapped[str] = mapped_column(String(128))
    policy_arn: Mapped[str] = mapped_column(String(2048))


class SessionCredential(Base):
    """Temporary credentials issued by STS AssumeRole."""

    __tablename__ = "sts_sessions"

    access_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_access_key: Mapped[str] = mapped_column(String(64))
    session_token: Mapped[str] = mapped_column(Text)
    role_name: Mapped[str] = mapped_column(String(64))
    session_name: Mapped[str] = mapped_column(String(64))
    expiration: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
