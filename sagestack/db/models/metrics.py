"""CloudWatch state: metrics, their datapoints, alarms and alarm history.

A metric is identified by namespace, name and its exact set of dimensions; the
dimension set is stored canonically (sorted JSON) with a hash for the unique
index, since dimension lists can be far longer than an index key allows.
Datapoint times are epoch milliseconds so range scans compare integers.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow
from sagestack.db.models.logs import BigId


class Metric(Base):
    __tablename__ = "cw_metrics"
    __table_args__ = (UniqueConstraint("namespace", "name", "dims_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    #: sha256 of ``dims``: the unique key of the dimension set.
    dims_hash: Mapped[str] = mapped_column(String(64))
    #: JSON list of [name, value] pairs sorted by name.
    dims: Mapped[str] = mapped_column(Text)
    #: Epoch ms of the newest PutMetricData (ListMetrics RecentlyActive).
    last_put: Mapped[int] = mapped_column(BigInteger, default=0)


class MetricDatapoint(Base):
    """One published datum: a single value, a values/counts list or a statistic set."""

    __tablename__ = "cw_datapoints"
    __table_args__ = (Index("ix_cw_datapoints_metric_time", "metric_id", "timestamp"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    metric_id: Mapped[int] = mapped_column(ForeignKey("cw_metrics.id", ondelete="CASCADE"))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(String(32), default="None")
    storage_resolution: Mapped[int] = mapped_column(Integer, default=60)
    sample_count: Mapped[float] = mapped_column(Float)
    sum: Mapped[float] = mapped_column(Float)
    minimum: Mapped[float] = mapped_column(Float)
    maximum: Mapped[float] = mapped_column(Float)
    #: JSON [[value, count], ...] kept for percentiles; NULL for a statistic set
    #: whose raw values are unknown.
    values: Mapped[str | None] = mapped_column(Text, nullable=True)


class MetricAlarm(Base):
    __tablename__ = "cw_alarms"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: The PutMetricAlarm request as JSON (minus Tags): the alarm's configuration.
    config: Mapped[str] = mapped_column(Text)
    namespace: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    metric_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dims_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state_value: Mapped[str] = mapped_column(String(32), default="INSUFFICIENT_DATA")
    state_reason: Mapped[str] = mapped_column(Text, default="")
    state_reason_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    state_updated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    state_transitioned: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    config_updated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AlarmHistory(Base):
    __tablename__ = "cw_alarm_history"
    __table_args__ = (Index("ix_cw_alarm_history_alarm_time", "alarm_name", "timestamp"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alarm_name: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    #: ConfigurationUpdate | StateUpdate | Action
    item_type: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)
