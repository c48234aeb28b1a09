"""SageMaker hosting: models, endpoint configurations and endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow


class Model(Base):
    __tablename__ = "sm_models"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    #: CreateModel parameters as validated (PrimaryContainer, ExecutionRoleArn, ...).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class EndpointConfig(Base):
    __tablename__ = "sm_endpoint_configs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Endpoint(Base):
    __tablename__ = "sm_endpoints"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    config_name: Mapped[str] = mapped_column(String(63))
    #: Set while UpdateEndpoint deploys a new configuration; the old one keeps serving.
    pending_config_name: Mapped[str | None] = mapped_column(String(63), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="Creating", index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Per variant: name, weights and instance counts as DescribeEndpoint reports them.
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
