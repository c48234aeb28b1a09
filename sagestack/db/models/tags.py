"""Tags on any resource, keyed by ARN (SageMaker AddTags/ListTags, IAM tags, ...)."""

from __future__ import annotations

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base


class ResourceTag(Base):
    __tablename__ = "resource_tags"
    __table_args__ = (UniqueConstraint("resource_arn", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_arn: Mapped[str] = mapped_column(String(2048), index=True)
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(256), default="")
