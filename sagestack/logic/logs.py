"""CloudWatch Logs' state: log groups, streams and events, their tags and retention.

Times are epoch milliseconds everywhere, as in the Logs API model. The platform
writes job output through :func:`ensure_log_stream` and :func:`append_events` and
applies retention with :func:`expire_events`; all three need only a Database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from sagestack.arns import resource_arn
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.logs import LogEvent, LogGroup, LogStream
from sagestack.logic import tags

DAY_MS = 86_400_000
MAX_TAGS = 50
#: GetLogEvents and FilterLogEvents return at most this many message bytes a page.
MAX_RESPONSE_BYTES = 1_048_576
#: Rows FilterLogEvents examines per call before handing back a nextToken, so one
#: request never scans a whole large group (AWS pages the same way).
FILTER_SCAN_BUDGET = 100_000
FILTER_CHUNK = 2_000

Position = tuple[int, int]  # (timestamp, event id): a point in a stream's order
TAG_LIMIT = tags.TagLimit(
    MAX_TAGS, lambda: AwsError("TooManyTagsException", f"A resource can have no more than {MAX_TAGS} tags.")
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def group_arn(region: str, account: str, name: str) -> str:
    """The ARN tags and TagResource use (no trailing ``:*``)."""
    return resource_arn("logs", region, account, f"log-group:{name}")


def stream_arn(region: str, account: str, group: str, stream: str) -> str:
    return resource_arn("logs", region, account, f"log-group:{group}:log-stream:{stream}")


# --------------------------------------------------------------------------- lookups


def find_group(session: Session, name: str) -> LogGroup:
    group = session.scalar(select(LogGroup).where(LogGroup.name == name))
    if group is None:
        raise AwsError("ResourceNotFoundException", "The specified log group does not exist.")
    return group


def find_stream(session: Session, group: LogGroup, name: str) -> LogStream:
    stream = session.scalar(select(LogStream).where(LogStream.group_id == group.id, LogStream.name == name))
    if stream is None:
        raise AwsError("ResourceNotFoundException", "The specified log stream does not exist.")
    return stream


def stream_names(session: Session, group: LogGroup, names: Sequence[str] | None = None,
                 prefix: str | None = None) -> dict[int, str]:
    """The group's streams (id -> name), all of them or those named or prefixed."""
    query = select(LogStream.id, LogStream.name).where(LogStream.group_id == group.id)
    if names:
        query = query.where(LogStream.name.in_(names))
    elif prefix:
        query = query.where(LogStream.name.startswith(prefix, autoescape=True))
    return {sid: name for sid, name in session.execute(query)}


# --------------------------------------------------------------------------- groups and streams


def create_group(session: Session, name: str, created: int, **fields: Any) -> LogGroup:
    group = LogGroup(name=name, creation_time=created, stored_bytes=0, **fields)
    session.add(group)
    session.flush()
    return group


def create_stream(session: Session, group: LogGroup, name: str, created: int) -> LogStream:
    stream = LogStream(group_id=group.id, name=name, creation_time=created, stored_bytes=0, upload_sequence=0)
    session.add(stream)
    session.flush()
    return stream


def delete_group(session: Session, group: LogGroup, arn: str) -> None:
    """The group, its streams, events and tags."""
    # Explicit deletes rather than relying on SQLite's per-connection foreign_keys pragma.
    session.execute(delete(LogEvent).where(LogEvent.group_id == group.id))
    session.execute(delete(LogStream).where(LogStream.group_id == group.id))
    tags.drop_tags(session, arn)
    session.delete(group)


def delete_stream(session: Session, group: LogGroup, stream: LogStream) -> None:
    session.execute(delete(LogEvent).where(LogEvent.stream_id == stream.id))
    group.stored_bytes = max(0, group.stored_bytes - stream.stored_bytes)
    session.delete(stream)


def set_tags(session: Session, arn: str, new: Mapping[str, str]) -> None:
    tags.put_tags(session, arn, new, limit=TAG_LIMIT)


def _get_or_create(session: Session, group_name: str, stream_name: str) -> tuple[LogGroup, LogStream]:
    created = now_ms()
    group = session.scalar(select(LogGroup).where(LogGroup.name == group_name))
    if group is None:
        group = create_group(session, group_name, created)
    stream = session.scalar(
        select(LogStream).where(LogStream.group_id == group.id, LogStream.name == stream_name)
    )
    if stream is None:
        stream = create_stream(session, group, stream_name, created)
    return group, stream


# --------------------------------------------------------------------------- writing events


def ensure_log_stream(db: Database, group: str, stream: str) -> None:
    """Create the log group and stream if they do not exist yet (idempotent)."""
    with db.transaction() as session:
        _get_or_create(session, group, stream)


def append_events(
    db: Database, group: str, stream: str, events: Sequence[tuple[int, str]], *, create: bool = True
) -> int:
    """Store a batch of ``(timestamp_ms, message)`` events in one transaction.

    The platform's path for job output: no AWS batch limits, no ordering or age
    checks, any order accepted. With ``create`` the group and stream are made on
    first use; otherwise a missing one raises ResourceNotFoundException.
    Empty messages are dropped: the Logs model cannot carry an empty event.
    Returns the number of events stored.
    """
    events = [(ts, msg) for ts, msg in events if msg]
    if not events:
        return 0
    with db.transaction() as session:
        if create:
            grp, strm = _get_or_create(session, group, stream)
        else:
            grp = find_group(session, group)
            strm = find_stream(session, grp, stream)
        insert_events(session, grp, strm, events, now_ms())
    return len(events)


def insert_events(
    session: Session, group: LogGroup, stream: LogStream, events: Sequence[tuple[int, str]], ingestion: int
) -> None:
    rows = [
        {
            "group_id": group.id,
            "stream_id": stream.id,
            "timestamp": int(ts),
            "ingestion_time": ingestion,
            "message": msg,
        }
        for ts, msg in events
    ]
    # Core executemany: one prepared statement for the whole batch, no ORM objects.
    session.execute(insert(LogEvent.__table__), rows)
    nbytes = sum(len(msg.encode()) for _, msg in events)
    lo = min(int(ts) for ts, _ in events)
    hi = max(int(ts) for ts, _ in events)
    if stream.first_event_timestamp is None or lo < stream.first_event_timestamp:
        stream.first_event_timestamp = lo
    if stream.last_event_timestamp is None or hi > stream.last_event_timestamp:
        stream.last_event_timestamp = hi
    stream.last_ingestion_time = ingestion
    stream.stored_bytes += nbytes
    group.stored_bytes += nbytes


def expire_events(db: Database, now: int | None = None) -> int:
    """Delete events older than each log group's retention; returns how many went.

    Meant to be called periodically by the platform, like AWS's background expiry.
    """
    now = now_ms() if now is None else now
    removed = 0
    with db.transaction() as session:
        groups = session.scalars(select(LogGroup).where(LogGroup.retention_days.is_not(None))).all()
        for group in groups:
            cutoff = now - int(group.retention_days or 0) * DAY_MS
            removed += _expire_group(session, group, cutoff)
    return removed


def _expire_group(session: Session, group: LogGroup, cutoff: int) -> int:
    old = and_(LogEvent.group_id == group.id, LogEvent.timestamp < cutoff)
    # length() counts characters, not UTF-8 bytes: storedBytes is an estimate after expiry.
    freed = session.scalar(select(func.coalesce(func.sum(func.length(LogEvent.message)), 0)).where(old))
    result = session.execute(delete(LogEvent).where(old))
    count = int(getattr(result, "rowcount", 0) or 0)
    if not count:
        return 0
    group.stored_bytes = max(0, group.stored_bytes - int(freed or 0))
    # Keep firstEventTimestamp truthful for the streams that lost their oldest events.
    for stream in session.scalars(
        select(LogStream).where(LogStream.group_id == group.id, LogStream.first_event_timestamp < cutoff)
    ):
        stream.first_event_timestamp = session.scalar(
            select(func.min(LogEvent.timestamp)).where(LogEvent.stream_id == stream.id)
        )
    return count


# --------------------------------------------------------------------------- reading events


def _after(col_ts: Any, col_id: Any, pos: Position) -> Any:
    # The plain ``timestamp >= pos_ts`` bound lets the index seek straight to the
    # position; the OR only trims the few rows sharing its millisecond.
    return and_(col_ts >= pos[0], or_(col_ts > pos[0], col_id > pos[1]))


def _before(col_ts: Any, col_id: Any, pos: Position) -> Any:
    return and_(col_ts <= pos[0], or_(col_ts < pos[0], col_id < pos[1]))


def _time_range(col: Any, start: int | None, end: int | None) -> list[Any]:
    """startTime inclusive, endTime exclusive, as the Logs API defines them."""
    conds = []
    if start is not None:
        conds.append(col >= start)
    if end is not None:
        conds.append(col < end)
    return conds


def read_stream(session: Session, stream_id: int, span: tuple[int | None, int | None], forward: bool,
                pos: Position | None, limit: int) -> list[LogEvent]:
    """Up to ``limit`` events of a stream in time order, after (or before) ``pos``, within 1 MB."""
    conds = [LogEvent.stream_id == stream_id, *_time_range(LogEvent.timestamp, *span)]
    if pos is not None:
        conds.append((_after if forward else _before)(LogEvent.timestamp, LogEvent.id, pos))
    order = [LogEvent.timestamp, LogEvent.id] if forward else [LogEvent.timestamp.desc(), LogEvent.id.desc()]
    rows = _cap_bytes(list(session.scalars(select(LogEvent).where(*conds).order_by(*order).limit(limit))))
    return rows if forward else rows[::-1]


def _cap_bytes(rows: list[LogEvent]) -> list[LogEvent]:
    """The leading rows (in reading order) that fit a 1 MB page; always at least one."""
    total = 0
    for i, row in enumerate(rows):
        total += len(row.message.encode())
        if total > MAX_RESPONSE_BYTES and i:
            return rows[:i]
    return rows


def _scan_group(session: Session, group_id: int, stream_ids: list[int] | None,
                span: tuple[int | None, int | None], pos: Position | None) -> list[LogEvent]:
    conds = [LogEvent.group_id == group_id, *_time_range(LogEvent.timestamp, *span)]
    if stream_ids is not None:
        conds.append(LogEvent.stream_id.in_(stream_ids))
    if pos is not None:
        conds.append(_after(LogEvent.timestamp, LogEvent.id, pos))
    query = select(LogEvent).where(*conds).order_by(LogEvent.timestamp, LogEvent.id).limit(FILTER_CHUNK)
    return list(session.scalars(query))


def filter_scan(
    session: Session,
    group_id: int,
    stream_ids: list[int] | None,
    span: tuple[int | None, int | None],
    pos: Position | None,
    limit: int,
    matches: Callable[[str], bool],
) -> tuple[list[LogEvent], Position | None]:
    """Matching events after ``pos`` and where the next page starts (None at the end).

    Scanning goes on past a full page until one more match shows up, so the last
    page carries no nextToken; it stops at the scan budget with a token, as AWS does.
    """
    found: list[LogEvent] = []
    scanned = size = 0
    while scanned < FILTER_SCAN_BUDGET:
        rows = _scan_group(session, group_id, stream_ids, span, pos)
        for row in rows:
            if matches(row.message):
                size += len(row.message.encode())
                if len(found) == limit or (found and size > MAX_RESPONSE_BYTES):
                    return found, pos
                found.append(row)
            pos = (row.timestamp, row.id)
        scanned += len(rows)
        if len(rows) < FILTER_CHUNK:
            return found, None
    return found, pos
