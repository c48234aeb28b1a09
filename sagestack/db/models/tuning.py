"""Hyperparameter tuning jobs and the training jobs (trials) each one launched.

A trial row is written *before* its training job is created, so a restart finds every
suggestion the tuner made: one with no training job yet is launched under the name it
was given, never a second time. Its status, objective and times live on the training
job row; the trial row keeps only what the training job does not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow


class TuningJob(Base):
    __tablename__ = "tuning_jobs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    #: The CreateHyperParameterTuningJob parameters (Tags removed, Grid's job count filled in).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default="InProgress")
    #: Set while InProgress too: the job is failing and waits for its running trials to stop.
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The completion criterion that ended the job (e.g. TargetObjectiveMetricValue), if any.
    completion_criterion: Mapped[str | None] = mapped_column(String(64), nullable=True)
    convergence_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    ended: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TuningTrial(Base):
    """One training job of a tuning job: suggestion ``trial_index``, launch ``attempt``.

    A trial whose training job was lost to an internal error is launched again for the
    same suggestion (same index and hyperparameters, next attempt, new name).
    """

    __tablename__ = "tuning_trials"
    __table_args__ = (UniqueConstraint("tuning_job_name", "trial_index", "attempt"),)

    training_job_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    tuning_job_name: Mapped[str] = mapped_column(String(32), index=True)
    trial_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    #: Every hyperparameter the training job is given (static, tuned, objective).
    hyperparameters: Mapped[dict[str, str]] = mapped_column(JSON)
    #: Objective value per epoch, in order (what early stopping judges).
    intermediate: Mapped[list[float]] = mapped_column(JSON, default=list)
    #: Why CreateTrainingJob refused the trial (it then has no training job).
    launch_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Why the tuning job stopped this trial (early stopping, completion, StopHyperParameterTuningJob).
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
