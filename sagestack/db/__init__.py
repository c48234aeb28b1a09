"""Metadata store: SQLAlchemy 2 models, sessions and Alembic migrations."""

from sagestack.db.base import Base, Database

__all__ = ["Base", "Database"]
