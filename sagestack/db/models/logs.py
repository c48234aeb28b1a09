"""CloudWatch Logs state: log groups, log streams and their events.

Times are epoch milliseconds (BigInteger), as the Logs API speaks them, so
reads and writes never convert. Events are the hot table: a training job may
write thousands of lines a second, and GetLogEvents/FilterLogEvents page
through them by index seeks on (stream, timestamp, id) and (group, timestamp, id).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base

# SQLite only autoincrements an "INTEGER PRIMARY KEY" (the rowid alias); BIGINT
# elsewhere so PostgreSQL does not run out of event ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class LogGroup(Base):
    __tablename__ = "logs_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    creation_time: Mapped[int] = mapped_column(BigInteger)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kms_key_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    log_group_class: Mapped[str] = mapped_column(String(32), default="STANDARD")
    deletion_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class LogStream(Base):
    __tablename__ = "logs_streams"
    __table_args__ = (UniqueConstraint("group_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("logs_groups.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    creation_time: Mapped[int] = mapped_column(BigInteger)
    first_event_timestamp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_event_timestamp: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    last_ingestion_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Bumped by every PutLogEvents; only reported (tokens are no longer checked).
    upload_sequence: Mapped[int] = mapped_column(BigInteger, default=0)


class LogEvent(Base):
    __tablename__ = "logs_events"
    __table_args__ = (
        # GetLogEvents: one stream in time order; the id breaks ties between
        # events with the same millisecond and is the position kept in tokens.
        Index("ix_logs_events_stream_time", "stream_id", "timestamp", "id"),
        # FilterLogEvents: a whole group interleaved in time order.
        Index("ix_logs_events_group_time", "group_id", "timestamp", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Denormalized from the stream so group-wide scans need no join.
    group_id: Mapped[int] = mapped_column(ForeignKey("logs_groups.id", ondelete="CASCADE"))
    stream_id: Mapped[int] = mapped_column(ForeignKey("logs_streams.id", ondelete="CASCADE"))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    ingestion_time: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
