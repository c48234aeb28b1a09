"""SageMaker training jobs: the request as received, and the state the runner moves it through."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow


class TrainingJob(Base):
    __tablename__ = "training_jobs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    #: The CreateTrainingJob parameters exactly as validated: Describe echoes them back.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default="InProgress")
    secondary_status: Mapped[str] = mapped_column(String(32), default="Starting")
    #: [{Status, StartTime (epoch s), EndTime, StatusMessage}], newest last.
    transitions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    training_start: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    training_end: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    model_artifacts: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    #: {metric name: [value, epoch seconds]} — the last value of every metric seen.
    final_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    debug_rule_statuses: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    profiler_rule_statuses: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    profiling_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The tuning job that launched this trial, if any.
    tuning_job_name: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=1)
