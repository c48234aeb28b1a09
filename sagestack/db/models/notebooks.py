"""SageMaker notebook instances and their lifecycle configurations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow


class NotebookInstance(Base):
    __tablename__ = "sm_notebook_instances"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    #: The settings Describe reports (InstanceType, RoleArn, VolumeSizeInGB, ...), defaults filled in.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32), default="Pending", index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: OnCreate runs once in an instance's life: set when it has succeeded.
    on_create_done: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The loopback port of the running Jupyter server (None while not running).
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: STS access key ids issued to the running instance, revoked when it stops.
    session_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NotebookLifecycleConfig(Base):
    __tablename__ = "sm_notebook_lifecycle_configs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    #: [{"Content": <base64 script>}] (at most one each, as in AWS).
    on_create: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    on_start: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
