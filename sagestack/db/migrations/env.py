"""Alembic environment: runs on the connection handed over by Database.migrate()."""

from alembic import context

import sagestack.db.models  # noqa: F401  (registers every table)
from sagestack.db.base import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` CLI use (autogenerate during development)
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://").connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
