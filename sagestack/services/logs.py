"""CloudWatch Logs (botocore service "logs"): log groups, log streams, log events.

Times are epoch milliseconds everywhere, as in the Logs API model. The state
(groups, streams, events, retention) is in :mod:`sagestack.logic.logs`, through
which the platform also writes job output.

Paging follows what the SDKs rely on: GetLogEvents returns the caller's own
token back once a stream is exhausted (SageMaker SDK v2 stops on an empty page
and keeps polling with that token), and DescribeLogStreams/FilterLogEvents omit
nextToken on the last page (SDK v2 loops while one is present).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.logs import LogGroup, LogStream
from sagestack.logic import logs, tags
from sagestack.logic.logs import Position, find_group, find_stream, now_ms
from sagestack.services import RequestContext, operation
from sagestack.services.pagination import decode_token, encode_token

SERVICE = "logs"

RETENTION_DAYS = frozenset(
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]
)
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
#: PutLogEvents counts this many bytes per event on top of its UTF-8 message.
EVENT_OVERHEAD_BYTES = 26
MAX_PAST_MS = 14 * logs.DAY_MS
MAX_FUTURE_MS = 2 * 3_600_000
MAX_SPAN_MS = logs.DAY_MS

_GROUP_NAME = re.compile(r"[.\-_/#A-Za-z0-9]{1,512}")
_STREAM_NAME = re.compile(r"[^:*]{1,512}")


# --------------------------------------------------------------------------- errors


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterException", message)


def _invalid_token(_token: str) -> AwsError:
    return _invalid("The specified nextToken is invalid.")


# --------------------------------------------------------------------------- tokens


def _decode_position(token: str) -> Position:
    """A FilterLogEvents token: the (timestamp, id) of the last event examined."""
    value = decode_token(token, _invalid_token, list)
    if not (len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise _invalid_token(token)
    return value[0], value[1]


def _position_token(direction: str, pos: Position) -> str:
    """GetLogEvents tokens: ``f/...`` (read on after) or ``b/...`` (read on before) a position."""
    return f"{direction}/{encode_token(list(pos))}"


def _parse_position_token(token: str) -> tuple[str, Position]:
    direction, _, rest = token.partition("/")
    if direction not in ("f", "b"):
        raise _invalid_token(token)
    return direction, _decode_position(rest)


# --------------------------------------------------------------------------- lookups


def _db(ctx: RequestContext) -> Database:
    return ctx.platform.db


def _group_arn(ctx: RequestContext, name: str) -> str:
    """The ARN tags and TagResource use (no trailing ``:*``)."""
    return logs.group_arn(ctx.region, ctx.account_id, name)


def _group_name_from_arn(arn: str) -> str | None:
    parts = arn.split(":", 6)
    if len(parts) < 7 or parts[2] != "logs" or parts[5] != "log-group":
        return None
    name = parts[6]
    return name[:-2] if name.endswith(":*") else name


def _resolve_group_name(params: dict[str, Any]) -> str:
    """logGroupName or logGroupIdentifier (a name or an ARN), exactly one of them."""
    name, ident = params.get("logGroupName"), params.get("logGroupIdentifier")
    if name and ident:
        raise _invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.")
    if ident:
        if ident.startswith("arn:"):
            parsed = _group_name_from_arn(ident)
            if parsed is None:
                raise _invalid(f"Invalid log group identifier: {ident}")
            return parsed
        return ident
    if not name:
        raise _invalid("Either logGroupName or logGroupIdentifier must be specified.")
    return name


def _check_group_name(name: str) -> None:
    if not _GROUP_NAME.fullmatch(name):
        raise _invalid(
            f"1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
        )


def _check_stream_name(name: str) -> None:
    if not _STREAM_NAME.fullmatch(name):
        raise _invalid(
            f"1 validation error detected: Value '{name}' at 'logStreamName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [^:*]*"
        )


def _check_limit(limit: int | None, maximum: int, default: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise _invalid(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: "
            f"Member must have value between 1 and {maximum}"
        )
    return limit


# --------------------------------------------------------------------------- tags


def _group_for_arn(session: Session, arn: str) -> LogGroup:
    name = _group_name_from_arn(arn)
    if name is None:
        raise AwsError("ResourceNotFoundException", f"The specified resource does not exist: {arn}")
    return find_group(session, name)


# --------------------------------------------------------------------------- log groups


def _group_dict(ctx: RequestContext, group: LogGroup) -> dict[str, Any]:
    arn = _group_arn(ctx, group.name)
    out: dict[str, Any] = {
        "logGroupName": group.name,
        "creationTime": group.creation_time,
        "metricFilterCount": 0,
        "arn": f"{arn}:*",
        "storedBytes": group.stored_bytes,
        "logGroupClass": group.log_group_class,
        "logGroupArn": arn,
        "deletionProtectionEnabled": bool(group.deletion_protection),
    }
    if group.retention_days is not None:
        out["retentionInDays"] = group.retention_days
    if group.kms_key_id:
        out["kmsKeyId"] = group.kms_key_id
    return out


@operation(SERVICE)
def create_log_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["logGroupName"]
    _check_group_name(name)
    tags = params.get("tags") or {}
    with _db(ctx).transaction() as session:
        if session.scalar(select(LogGroup.id).where(LogGroup.name == name)) is not None:
            raise AwsError("ResourceAlreadyExistsException", "The specified log group already exists")
        logs.create_group(
            session,
            name,
            now_ms(),
            kms_key_id=params.get("kmsKeyId"),
            log_group_class=params.get("logGroupClass") or "STANDARD",
            deletion_protection=bool(params.get("deletionProtectionEnabled", False)),
        )
        if tags:
            logs.set_tags(session, _group_arn(ctx, name), tags)
    return {}


@operation(SERVICE)
def delete_log_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with _db(ctx).transaction() as session:
        group = find_group(session, params["logGroupName"])
        if group.deletion_protection:
            raise AwsError(
                "ValidationException",
                "The log group has deletion protection enabled; disable it before deleting the group.",
            )
        logs.delete_group(session, group, _group_arn(ctx, group.name))
    return {}


def _group_filters(params: dict[str, Any]) -> list[Any]:
    prefix, pattern = params.get("logGroupNamePrefix"), params.get("logGroupNamePattern")
    if prefix and pattern:
        raise _invalid("LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.")
    conds: list[Any] = []
    if prefix:
        conds.append(LogGroup.name.startswith(prefix, autoescape=True))
    if pattern:
        # AWS matches the pattern case-insensitively anywhere in the name.
        conds.append(func.lower(LogGroup.name).contains(pattern.lower(), autoescape=True))
    if params.get("logGroupClass"):
        conds.append(LogGroup.log_group_class == params["logGroupClass"])
    idents = params.get("logGroupIdentifiers")
    if idents:
        names = [(_group_name_from_arn(i) if i.startswith("arn:") else i) or i for i in idents]
        conds.append(LogGroup.name.in_(names))
    return conds


@operation(SERVICE)
def describe_log_groups(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    limit = _check_limit(params.get("limit"), 50, 50)
    conds = _group_filters(params)
    if params.get("nextToken"):
        conds.append(LogGroup.name > decode_token(params["nextToken"], _invalid_token, str))
    with _db(ctx).session() as session:
        rows = session.scalars(select(LogGroup).where(*conds).order_by(LogGroup.name).limit(limit + 1)).all()
    out: dict[str, Any] = {"logGroups": [_group_dict(ctx, g) for g in rows[:limit]]}
    if len(rows) > limit:
        out["nextToken"] = encode_token(rows[limit - 1].name)
    return out


@operation(SERVICE)
def put_retention_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    days = params["retentionInDays"]
    if days not in RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in sorted(RETENTION_DAYS))
        raise _invalid(
            f"1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{allowed}]"
        )
    with _db(ctx).transaction() as session:
        find_group(session, params["logGroupName"]).retention_days = days
    return {}


@operation(SERVICE)
def delete_retention_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with _db(ctx).transaction() as session:
        find_group(session, params["logGroupName"]).retention_days = None
    return {}


#: How a tag operation finds its log group: by name (TagLogGroup and its siblings)
#: or by ARN (TagResource and its siblings); both keep the tags under the group's ARN.
_GroupFinder = Callable[[Session, str], LogGroup]


def _tag_group(ctx: RequestContext, find: _GroupFinder, ref: str, new: Mapping[str, str]) -> dict[str, Any]:
    with _db(ctx).transaction() as session:
        logs.set_tags(session, _group_arn(ctx, find(session, ref).name), new)
    return {}


def _untag_group(ctx: RequestContext, find: _GroupFinder, ref: str, keys: Iterable[str]) -> dict[str, Any]:
    with _db(ctx).transaction() as session:
        tags.remove_tags(session, _group_arn(ctx, find(session, ref).name), keys)
    return {}


def _list_group_tags(ctx: RequestContext, find: _GroupFinder, ref: str) -> dict[str, Any]:
    with _db(ctx).session() as session:
        return {"tags": tags.tag_map(session, _group_arn(ctx, find(session, ref).name))}


@operation(SERVICE)
def tag_log_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _tag_group(ctx, find_group, params["logGroupName"], params["tags"])


@operation(SERVICE)
def untag_log_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag_group(ctx, find_group, params["logGroupName"], params["tags"])


@operation(SERVICE)
def list_tags_log_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list_group_tags(ctx, find_group, params["logGroupName"])


@operation(SERVICE)
def tag_resource(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _tag_group(ctx, _group_for_arn, params["resourceArn"], params["tags"])


@operation(SERVICE)
def untag_resource(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag_group(ctx, _group_for_arn, params["resourceArn"], params["tagKeys"])


@operation(SERVICE)
def list_tags_for_resource(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list_group_tags(ctx, _group_for_arn, params["resourceArn"])


# --------------------------------------------------------------------------- log streams


def _stream_dict(ctx: RequestContext, group: LogGroup, stream: LogStream) -> dict[str, Any]:
    out: dict[str, Any] = {
        "logStreamName": stream.name,
        "creationTime": stream.creation_time,
        "arn": logs.stream_arn(ctx.region, ctx.account_id, group.name, stream.name),
        "storedBytes": stream.stored_bytes,
        # Sequence tokens are no longer checked, but older SDKs still read one.
        "uploadSequenceToken": str(stream.upload_sequence + 1),
    }
    if stream.first_event_timestamp is not None:
        out["firstEventTimestamp"] = stream.first_event_timestamp
        out["lastEventTimestamp"] = stream.last_event_timestamp
    if stream.last_ingestion_time is not None:
        out["lastIngestionTime"] = stream.last_ingestion_time
    return out


@operation(SERVICE)
def create_log_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["logStreamName"]
    _check_stream_name(name)
    with _db(ctx).transaction() as session:
        group = find_group(session, params["logGroupName"])
        exists = session.scalar(
            select(LogStream.id).where(LogStream.group_id == group.id, LogStream.name == name)
        )
        if exists is not None:
            raise AwsError("ResourceAlreadyExistsException", "The specified log stream already exists")
        logs.create_stream(session, group, name, now_ms())
    return {}


@operation(SERVICE)
def delete_log_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with _db(ctx).transaction() as session:
        group = find_group(session, params["logGroupName"])
        stream = find_stream(session, group, params["logStreamName"])
        logs.delete_stream(session, group, stream)
    return {}


def _stream_order(params: dict[str, Any]) -> tuple[bool, bool]:
    """(order by last event time, descending), validated as AWS does."""
    by_time = params.get("orderBy", "LogStreamName") == "LastEventTime"
    if by_time and params.get("logStreamNamePrefix"):
        raise _invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
    return by_time, bool(params.get("descending", False))


@operation(SERVICE)
def describe_log_streams(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    by_time, desc = _stream_order(params)
    limit = _check_limit(params.get("limit"), 50, 50)
    with _db(ctx).session() as session:
        group = find_group(session, _resolve_group_name(params))
        # Keyset paging on the sort key of the last stream returned, so streams created
        # between pages neither repeat nor shift the page boundary.
        cols = (
            [func.coalesce(LogStream.last_event_timestamp, -1), LogStream.name]
            if by_time
            else [LogStream.name]
        )
        query = select(LogStream).where(LogStream.group_id == group.id)
        if params.get("logStreamNamePrefix"):
            query = query.where(LogStream.name.startswith(params["logStreamNamePrefix"], autoescape=True))
        if params.get("nextToken"):
            last = decode_token(params["nextToken"], _invalid_token, list)
            if len(last) != len(cols):
                raise _invalid_token(params["nextToken"])
            key = tuple_(*cols)
            query = query.where(key < tuple_(*last) if desc else key > tuple_(*last))
        query = query.order_by(*[c.desc() if desc else c for c in cols]).limit(limit + 1)
        rows = session.scalars(query).all()
        out: dict[str, Any] = {"logStreams": [_stream_dict(ctx, group, s) for s in rows[:limit]]}
    if len(rows) > limit:
        tail = rows[limit - 1]
        token = [tail.last_event_timestamp if tail.last_event_timestamp is not None else -1, tail.name]
        out["nextToken"] = encode_token(token if by_time else [tail.name])
    return out


# --------------------------------------------------------------------------- put / get events


def _check_batch(events: list[dict[str, Any]]) -> None:
    if not events:
        raise _invalid("logEvents must contain at least one event.")
    if len(events) > MAX_BATCH_EVENTS:
        raise _invalid(
            f"1 validation error detected: Value at 'logEvents' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_BATCH_EVENTS}"
        )
    size = sum(len(e["message"].encode()) + EVENT_OVERHEAD_BYTES for e in events)
    if size > MAX_BATCH_BYTES:
        raise _invalid(f"Upload too large: {size} bytes exceeds limit of {MAX_BATCH_BYTES}")
    for prev, cur in itertools.pairwise(events):
        if cur["timestamp"] < prev["timestamp"]:
            raise _invalid("Log events in a single PutLogEvents request must be in chronological order.")


def _split_rejected(
    events: list[dict[str, Any]], now: int, retention_days: int | None
) -> tuple[int, int, dict[str, int]]:
    """The [start, end) slice of acceptable events and rejectedLogEventsInfo.

    The batch is sorted, so too-old and expired events form a prefix and
    too-new events a suffix.
    """
    too_old_before = now - MAX_PAST_MS
    expired_before = now - retention_days * logs.DAY_MS if retention_days else None
    too_new_after = now + MAX_FUTURE_MS
    info: dict[str, int] = {}
    start, end = 0, len(events)
    for i, event in enumerate(events):
        ts = event["timestamp"]
        if ts < too_old_before:
            info["tooOldLogEventEndIndex"] = i
        if expired_before is not None and ts < expired_before:
            info["expiredLogEventEndIndex"] = i
        if ts < too_old_before or (expired_before is not None and ts < expired_before):
            start = i + 1
        if ts > too_new_after:
            info.setdefault("tooNewLogEventStartIndex", i)
            end = min(end, i)
    return start, max(start, end), info


@operation(SERVICE)
def put_log_events(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    events: list[dict[str, Any]] = params["logEvents"]
    _check_batch(events)
    now = now_ms()
    with _db(ctx).transaction() as session:
        group = find_group(session, params["logGroupName"])
        stream = find_stream(session, group, params["logStreamName"])
        start, end, rejected = _split_rejected(events, now, group.retention_days)
        accepted = events[start:end]
        if accepted and accepted[-1]["timestamp"] - accepted[0]["timestamp"] > MAX_SPAN_MS:
            raise _invalid(
                "The batch of log events in a single PutLogEvents request cannot span more than 24 hours."
            )
        if accepted:
            logs.insert_events(session, group, stream, [(e["timestamp"], e["message"]) for e in accepted], now)
        stream.upload_sequence += 1
        out: dict[str, Any] = {"nextSequenceToken": str(stream.upload_sequence + 1)}
    if rejected:
        out["rejectedLogEventsInfo"] = rejected
    return out


def _span(params: dict[str, Any]) -> tuple[int | None, int | None]:
    return params.get("startTime"), params.get("endTime")


@operation(SERVICE)
def get_log_events(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    limit = _check_limit(params.get("limit"), 10_000, 10_000)
    token = params.get("nextToken")
    direction, pos = _parse_position_token(token) if token else (None, None)
    # Without a token the tail of the range is read unless startFromHead is set.
    forward = direction == "f" if direction else bool(params.get("startFromHead", False))
    with _db(ctx).session() as session:
        group = find_group(session, _resolve_group_name(params))
        stream = find_stream(session, group, params["logStreamName"])
        rows = logs.read_stream(session, stream.id, _span(params), forward, pos, limit)
    events = [
        {"timestamp": r.timestamp, "message": r.message, "ingestionTime": r.ingestion_time} for r in rows
    ]
    if rows:
        first, last = (rows[0].timestamp, rows[0].id), (rows[-1].timestamp, rows[-1].id)
    else:
        # Nothing (more) to read: hand the caller's own position back, which is
        # how clients recognise the end of a stream and poll for new events.
        here = pos if pos is not None else (params.get("startTime") or 0, 0)
        first = last = here
    return {
        "events": events,
        "nextForwardToken": _position_token("f", last),
        "nextBackwardToken": _position_token("b", first),
    }


# --------------------------------------------------------------------------- filter


_TERM = re.compile(r'([?-]?)(?:"((?:[^"\\]|\\.)*)"|(%[^%]+%)|(\S+))')


def _term_matcher(quoted: str | None, regex: str | None, bare: str | None) -> Callable[[str], bool]:
    if regex is not None:
        try:
            compiled = re.compile(regex[1:-1])
        except re.error as exc:
            raise _invalid(f"Invalid regular expression in filter pattern: {regex}") from exc
        return lambda msg: compiled.search(msg) is not None
    text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "")
    return lambda msg: text in msg


def compile_filter_pattern(pattern: str | None) -> Callable[[str], bool]:
    """A predicate for the unstructured-text filter pattern syntax.

    Supported: terms (all must appear), "quoted phrases", ``?term`` (at least one
    of the ?-terms must appear), ``-term`` (must not appear) and ``%regex%``.
    Matching is case-sensitive, as in AWS. JSON (``{ $.x = 1 }``) and
    space-delimited (``[a, b]``) patterns are rejected rather than mis-evaluated.
    """
    text = (pattern or "").strip()
    if not text:
        return lambda _msg: True
    if text[0] in "{[":
        raise _invalid(
            "Invalid filter pattern: JSON and space-delimited filter patterns are not supported here; "
            'use terms, "quoted phrases", ?alternatives, -exclusions or %regex%.'
        )
    required: list[Callable[[str], bool]] = []
    optional: list[Callable[[str], bool]] = []
    excluded: list[Callable[[str], bool]] = []
    for match in _TERM.finditer(text):
        sign, quoted, regex, bare = match.groups()
        bucket = {"?": optional, "-": excluded}.get(sign, required)
        bucket.append(_term_matcher(quoted, regex, bare))

    def matches(msg: str) -> bool:
        return (
            all(m(msg) for m in required)
            and (not optional or any(m(msg) for m in optional))
            and not any(m(msg) for m in excluded)
        )

    return matches


def _filter_streams(session: Session, group: LogGroup, params: dict[str, Any]) -> dict[int, str] | None:
    """The streams to search (id -> name), or None for every stream in the group."""
    names, prefix = params.get("logStreamNames"), params.get("logStreamNamePrefix")
    if names and prefix:
        raise _invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
    if not (names or prefix):
        return None
    return logs.stream_names(session, group, names, prefix)


@operation(SERVICE)
def filter_log_events(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    limit = _check_limit(params.get("limit"), 10_000, 10_000)
    matches = compile_filter_pattern(params.get("filterPattern"))
    pos = _decode_position(params["nextToken"]) if params.get("nextToken") else None
    with _db(ctx).session() as session:
        group = find_group(session, _resolve_group_name(params))
        selected = _filter_streams(session, group, params)
        if selected is not None and not selected:
            return {"events": []}
        names = selected if selected is not None else logs.stream_names(session, group)
        ids = list(selected) if selected is not None else None
        rows, next_pos = logs.filter_scan(session, group.id, ids, _span(params), pos, limit, matches)
    out: dict[str, Any] = {
        "events": [
            {
                "logStreamName": names.get(r.stream_id, ""),
                "timestamp": r.timestamp,
                "message": r.message,
                "ingestionTime": r.ingestion_time,
                "eventId": str(r.id),
            }
            for r in rows
        ],
    }
    if next_pos is not None:
        out["nextToken"] = encode_token(list(next_pos))
    return out
