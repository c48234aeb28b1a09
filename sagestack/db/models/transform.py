"""SageMaker batch transform jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow


class TransformJob(Base):
    __tablename__ = "transform_jobs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default="InProgress")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
