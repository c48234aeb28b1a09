"""CloudWatch Logs handlers, called directly on a temporary SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from sqlalchemy import text

import sagestack.db.models  # noqa: F401  (registers every table)
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.logic import logs as L
from sagestack.platform import Platform
from sagestack.services import RequestContext, lookup
from sagestack.services import logs as _handlers  # noqa: F401  (registers them)
from sagestack.services.context import Principal
from sagestack.testing.platforms import bare_platform

ACCOUNT = "123456789012"
GROUP = "/aws/sagemaker/TrainingJobs"

MODEL = botocore.session.get_session().get_service_model("logs")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    platform = bare_platform(tmp_path)
    yield platform
    platform.db.dispose()


@pytest.fixture
def db(platform: Platform) -> Database:
    return platform.db


@pytest.fixture
def ctx(platform: Platform) -> RequestContext:
    principal = Principal(
        ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/admin", "AIDATEST", "AKIATEST", "user", "admin"
    )
    return RequestContext("logs", "Test", "us-east-1", "req-1", principal, platform)


def call(ctx: RequestContext, op: str, **params: Any) -> dict[str, Any]:
    handler = lookup("logs", op)
    assert handler is not None, op
    out = handler(ctx, params) or {}
    # What the protocol layer will serialize must fit the botocore output shape.
    shape = MODEL.operation_model(op).output_shape
    if shape is not None:
        report = ParamValidator().validate(out, shape)
        assert not report.has_errors(), report.generate_report()
    return out


def err(ctx: RequestContext, op: str, **params: Any) -> AwsError:
    with pytest.raises(AwsError) as info:
        call(ctx, op, **params)
    return info.value


def make_stream(ctx: RequestContext, group: str = GROUP, stream: str = "job/algo-1") -> None:
    if not call(ctx, "DescribeLogGroups", logGroupNamePrefix=group)["logGroups"]:
        call(ctx, "CreateLogGroup", logGroupName=group)
    call(ctx, "CreateLogStream", logGroupName=group, logStreamName=stream)


# ------------------------------------------------------------------ groups


def test_group_lifecycle_and_errors(ctx: RequestContext) -> None:
    call(ctx, "CreateLogGroup", logGroupName="/a/one", tags={"team": "ml"})
    e = err(ctx, "CreateLogGroup", logGroupName="/a/one")
    assert (e.code, e.message) == ("ResourceAlreadyExistsException", "The specified log group already exists")
    groups = call(ctx, "DescribeLogGroups")["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["/a/one"]
    g = groups[0]
    assert g["arn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/a/one:*"
    assert g["logGroupArn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/a/one"
    assert isinstance(g["creationTime"], int) and g["storedBytes"] == 0
    assert "retentionInDays" not in g
    assert call(ctx, "ListTagsLogGroup", logGroupName="/a/one")["tags"] == {"team": "ml"}
    call(ctx, "DeleteLogGroup", logGroupName="/a/one")
    e = err(ctx, "DeleteLogGroup", logGroupName="/a/one")
    assert (e.code, e.message) == ("ResourceNotFoundException", "The specified log group does not exist.")
    assert call(ctx, "DescribeLogGroups")["logGroups"] == []


def test_invalid_group_name(ctx: RequestContext) -> None:
    assert err(ctx, "CreateLogGroup", logGroupName="bad name!").code == "InvalidParameterException"


def test_describe_log_groups_prefix_pattern_and_paging(ctx: RequestContext) -> None:
    for name in ["/x/a", "/x/b", "/x/c", "/y/Alpha", "/x_literal"]:
        call(ctx, "CreateLogGroup", logGroupName=name)
    names = lambda r: [g["logGroupName"] for g in r["logGroups"]]  # noqa: E731
    assert names(call(ctx, "DescribeLogGroups", logGroupNamePrefix="/x/")) == ["/x/a", "/x/b", "/x/c"]
    # "_" is a LIKE wildcard: the prefix must be matched literally.
    assert names(call(ctx, "DescribeLogGroups", logGroupNamePrefix="/x_")) == ["/x_literal"]
    assert names(call(ctx, "DescribeLogGroups", logGroupNamePattern="alpha")) == ["/y/Alpha"]
    assert err(ctx, "DescribeLogGroups", logGroupNamePrefix="/x", logGroupNamePattern="a").code == (
        "InvalidParameterException"
    )
    page1 = call(ctx, "DescribeLogGroups", limit=2)
    assert names(page1) == ["/x/a", "/x/b"] and "nextToken" in page1
    page2 = call(ctx, "DescribeLogGroups", limit=2, nextToken=page1["nextToken"])
    assert names(page2) == ["/x/c", "/x_literal"]
    page3 = call(ctx, "DescribeLogGroups", limit=2, nextToken=page2["nextToken"])
    assert names(page3) == ["/y/Alpha"] and "nextToken" not in page3
    # Exactly a full last page: still no token.
    assert "nextToken" not in call(ctx, "DescribeLogGroups", limit=5)


def test_retention_policy(ctx: RequestContext) -> None:
    call(ctx, "CreateLogGroup", logGroupName="g")
    call(ctx, "PutRetentionPolicy", logGroupName="g", retentionInDays=7)
    assert call(ctx, "DescribeLogGroups")["logGroups"][0]["retentionInDays"] == 7
    assert (
        err(ctx, "PutRetentionPolicy", logGroupName="g", retentionInDays=4).code
        == "InvalidParameterException"
    )
    call(ctx, "DeleteRetentionPolicy", logGroupName="g")
    assert "retentionInDays" not in call(ctx, "DescribeLogGroups")["logGroups"][0]
    assert (
        err(ctx, "PutRetentionPolicy", logGroupName="nope", retentionInDays=7).code
        == "ResourceNotFoundException"
    )


def test_tags_by_name_and_arn(ctx: RequestContext) -> None:
    call(ctx, "CreateLogGroup", logGroupName="g")
    arn = call(ctx, "DescribeLogGroups")["logGroups"][0]["logGroupArn"]
    call(ctx, "TagLogGroup", logGroupName="g", tags={"a": "1", "b": "2"})
    call(ctx, "UntagLogGroup", logGroupName="g", tags=["a"])
    call(ctx, "TagResource", resourceArn=arn, tags={"c": "3"})
    assert call(ctx, "ListTagsForResource", resourceArn=arn)["tags"] == {"b": "2", "c": "3"}
    call(ctx, "UntagResource", resourceArn=arn + ":*", tagKeys=["b"])
    assert call(ctx, "ListTagsLogGroup", logGroupName="g")["tags"] == {"c": "3"}
    missing = arn.replace(":g", ":nope")
    assert err(ctx, "ListTagsForResource", resourceArn=missing).code == "ResourceNotFoundException"


# ------------------------------------------------------------------ streams


def test_stream_lifecycle_and_errors(ctx: RequestContext) -> None:
    e = err(ctx, "CreateLogStream", logGroupName="nope", logStreamName="s")
    assert e.message == "The specified log group does not exist."
    make_stream(ctx, stream="s")
    assert err(ctx, "CreateLogStream", logGroupName=GROUP, logStreamName="s").code == (
        "ResourceAlreadyExistsException"
    )
    assert (
        err(ctx, "CreateLogStream", logGroupName=GROUP, logStreamName="a:b").code
        == "InvalidParameterException"
    )
    e = err(
        ctx,
        "PutLogEvents",
        logGroupName=GROUP,
        logStreamName="other",
        logEvents=[{"timestamp": 1, "message": "x"}],
    )
    assert (e.code, e.message) == ("ResourceNotFoundException", "The specified log stream does not exist.")
    call(ctx, "DeleteLogStream", logGroupName=GROUP, logStreamName="s")
    assert (
        err(ctx, "DeleteLogStream", logGroupName=GROUP, logStreamName="s").code == "ResourceNotFoundException"
    )


def test_describe_log_streams_no_token_on_last_page(ctx: RequestContext) -> None:
    """SageMaker SDK v2 loops while nextToken is present."""
    make_stream(ctx, stream="job/algo-1-1")
    out = call(
        ctx,
        "DescribeLogStreams",
        logGroupName=GROUP,
        logStreamNamePrefix="job/",
        orderBy="LogStreamName",
        limit=1,
    )
    assert [s["logStreamName"] for s in out["logStreams"]] == ["job/algo-1-1"]
    assert "nextToken" not in out
    s = out["logStreams"][0]
    assert s["arn"].endswith(f"log-group:{GROUP}:log-stream:job/algo-1-1")
    assert "firstEventTimestamp" not in s and isinstance(s["creationTime"], int)


def test_describe_log_streams_ordering_and_paging(ctx: RequestContext) -> None:
    make_stream(ctx, stream="b")
    for name in ["a", "c", "d"]:
        call(ctx, "CreateLogStream", logGroupName=GROUP, logStreamName=name)
    now = L.now_ms()
    for i, name in enumerate(["c", "a", "d", "b"]):
        L.append_events(ctx.platform.db, GROUP, name, [(now + i, f"line {i}")])
    names = lambda r: [s["logStreamName"] for s in r["logStreams"]]  # noqa: E731
    assert names(call(ctx, "DescribeLogStreams", logGroupName=GROUP)) == ["a", "b", "c", "d"]
    assert names(call(ctx, "DescribeLogStreams", logGroupName=GROUP, descending=True)) == ["d", "c", "b", "a"]
    by_time = call(ctx, "DescribeLogStreams", logGroupName=GROUP, orderBy="LastEventTime", descending=True)
    assert names(by_time) == ["b", "d", "a", "c"]
    seen: list[str] = []
    token = None
    while True:
        kw = {"nextToken": token} if token else {}
        page = call(ctx, "DescribeLogStreams", logGroupName=GROUP, orderBy="LastEventTime", limit=3, **kw)
        seen += names(page)
        token = page.get("nextToken")
        if not token:
            break
    assert seen == ["c", "a", "d", "b"]
    e = err(ctx, "DescribeLogStreams", logGroupName=GROUP, orderBy="LastEventTime", logStreamNamePrefix="a")
    assert e.code == "InvalidParameterException"
    arn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{GROUP}:*"
    assert len(call(ctx, "DescribeLogStreams", logGroupIdentifier=arn)["logStreams"]) == 4
    assert err(ctx, "DescribeLogStreams", logGroupName="nope").code == "ResourceNotFoundException"


# ------------------------------------------------------------------ put / get


def put(ctx: RequestContext, events: list[tuple[int, str]], stream: str = "job/algo-1") -> dict[str, Any]:
    return call(
        ctx,
        "PutLogEvents",
        logGroupName=GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": ts, "message": msg} for ts, msg in events],
    )


def test_put_log_events_updates_stream_fields(ctx: RequestContext) -> None:
    make_stream(ctx)
    now = L.now_ms()
    out = put(ctx, [(now - 10, "hello"), (now, "world")])
    assert "rejectedLogEventsInfo" not in out and out["nextSequenceToken"]
    s = call(ctx, "DescribeLogStreams", logGroupName=GROUP)["logStreams"][0]
    assert s["firstEventTimestamp"] == now - 10 and s["lastEventTimestamp"] == now
    assert s["lastIngestionTime"] >= now and s["storedBytes"] == 10
    assert call(ctx, "DescribeLogGroups")["logGroups"][0]["storedBytes"] == 10


def test_put_log_events_rejects_too_old_and_too_new(ctx: RequestContext) -> None:
    make_stream(ctx)
    now = L.now_ms()
    day = 86_400_000
    out = put(
        ctx,
        [(now - 15 * day, "old"), (now - 15 * day + 1, "old2"), (now, "ok"), (now + 3 * 3_600_000, "new")],
    )
    assert out["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 3}
    got = call(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="job/algo-1", startFromHead=True)
    assert [e["message"] for e in got["events"]] == ["ok"]


def test_put_log_events_expired_by_retention(ctx: RequestContext) -> None:
    make_stream(ctx)
    call(ctx, "PutRetentionPolicy", logGroupName=GROUP, retentionInDays=1)
    now = L.now_ms()
    out = put(ctx, [(now - 2 * 86_400_000, "expired"), (now, "ok")])
    assert out["rejectedLogEventsInfo"] == {"expiredLogEventEndIndex": 0}


def test_put_log_events_batch_rules(ctx: RequestContext) -> None:
    make_stream(ctx)
    now = L.now_ms()
    e = err(
        ctx,
        "PutLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        logEvents=[{"timestamp": now, "message": "b"}, {"timestamp": now - 1, "message": "a"}],
    )
    assert e.code == "InvalidParameterException" and "chronological" in e.message
    e = err(
        ctx,
        "PutLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        logEvents=[{"timestamp": now - 2 * 86_400_000, "message": "a"}, {"timestamp": now, "message": "b"}],
    )
    assert "24 hours" in e.message
    big = [{"timestamp": now, "message": "x" * 1000} for _ in range(1100)]
    assert (
        "too large"
        in err(ctx, "PutLogEvents", logGroupName=GROUP, logStreamName="job/algo-1", logEvents=big).message
    )
    # The sequence token is ignored, whatever it is.
    call(
        ctx,
        "PutLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        sequenceToken="bogus",
        logEvents=[{"timestamp": now, "message": "fine"}],
    )


def test_get_log_events_from_head_and_exhaustion_token(ctx: RequestContext) -> None:
    """The SageMaker SDK v2 log_stream loop: page forward until an empty page."""
    make_stream(ctx)
    base = L.now_ms() - 60_000
    L.append_events(ctx.platform.db, GROUP, "job/algo-1", [(base + i // 3, f"line {i}") for i in range(25)])
    got: list[str] = []
    token = None
    for _ in range(20):
        kw = {"nextToken": token} if token else {}
        page = call(
            ctx,
            "GetLogEvents",
            logGroupName=GROUP,
            logStreamName="job/algo-1",
            startTime=0,
            startFromHead=True,
            limit=10,
            **kw,
        )
        got += [e["message"] for e in page["events"]]
        if not page["events"]:
            assert page["nextForwardToken"] == token  # same token back once exhausted
            break
        token = page["nextForwardToken"]
    assert got == [f"line {i}" for i in range(25)]
    # New events appear on the next poll with the same token.
    L.append_events(ctx.platform.db, GROUP, "job/algo-1", [(base + 100, "late")])
    page = call(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="job/algo-1", nextToken=token)
    assert [e["message"] for e in page["events"]] == ["late"]
    assert set(page["events"][0]) == {"timestamp", "message", "ingestionTime"}


def test_get_log_events_tail_and_backward(ctx: RequestContext) -> None:
    make_stream(ctx)
    base = L.now_ms() - 60_000
    L.append_events(ctx.platform.db, GROUP, "job/algo-1", [(base + i, f"m{i}") for i in range(10)])
    tail = call(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="job/algo-1", limit=3)
    assert [e["message"] for e in tail["events"]] == ["m7", "m8", "m9"]
    back = call(
        ctx,
        "GetLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        limit=3,
        nextToken=tail["nextBackwardToken"],
    )
    assert [e["message"] for e in back["events"]] == ["m4", "m5", "m6"]
    fwd = call(
        ctx,
        "GetLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        nextToken=tail["nextForwardToken"],
    )
    assert fwd["events"] == [] and fwd["nextForwardToken"] == tail["nextForwardToken"]
    ranged = call(
        ctx,
        "GetLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        startTime=base + 2,
        endTime=base + 5,
        startFromHead=True,
    )
    assert [e["message"] for e in ranged["events"]] == ["m2", "m3", "m4"]
    empty = call(
        ctx,
        "GetLogEvents",
        logGroupName=GROUP,
        logStreamName="job/algo-1",
        startTime=base + 100,
        startFromHead=True,
    )
    assert empty["events"] == [] and empty["nextForwardToken"].startswith("f/")
    assert err(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="job/algo-1", nextToken="zzz").code == (
        "InvalidParameterException"
    )
    assert (
        err(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="nope").code == "ResourceNotFoundException"
    )


def test_get_log_events_uses_index_seek(ctx: RequestContext) -> None:
    db = ctx.platform.db
    with db.session() as session:
        plan = session.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT * FROM logs_events WHERE stream_id = 1 AND timestamp >= 5 "
                "AND (timestamp > 5 OR id > 3) ORDER BY timestamp, id LIMIT 10"
            )
        ).all()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "ix_logs_events_stream_time" in detail and "TEMP B-TREE" not in detail


# ------------------------------------------------------------------ filter


def test_filter_log_events_patterns_and_paging(ctx: RequestContext) -> None:
    make_stream(ctx, stream="job/algo-1")
    call(ctx, "CreateLogStream", logGroupName=GROUP, logStreamName="job/algo-2")
    call(ctx, "CreateLogStream", logGroupName=GROUP, logStreamName="other")
    base = L.now_ms() - 60_000
    db = ctx.platform.db
    L.append_events(db, GROUP, "job/algo-1", [(base + 0, "INFO start"), (base + 2, "ERROR disk full")])
    L.append_events(
        db, GROUP, "job/algo-2", [(base + 1, "WARN slow step"), (base + 3, "INFO train-loss: 0.5")]
    )
    L.append_events(db, GROUP, "other", [(base + 4, "ERROR elsewhere")])

    def messages(**kw: Any) -> list[str]:
        return [e["message"] for e in call(ctx, "FilterLogEvents", logGroupName=GROUP, **kw)["events"]]

    assert messages() == [
        "INFO start",
        "WARN slow step",
        "ERROR disk full",
        "INFO train-loss: 0.5",
        "ERROR elsewhere",
    ]
    assert messages(filterPattern="ERROR") == ["ERROR disk full", "ERROR elsewhere"]
    assert messages(filterPattern="ERROR disk") == ["ERROR disk full"]
    assert messages(filterPattern='"slow step"') == ["WARN slow step"]
    assert messages(filterPattern="?WARN ?ERROR", logStreamNamePrefix="job/") == [
        "WARN slow step",
        "ERROR disk full",
    ]
    assert messages(filterPattern="INFO -start") == ["INFO train-loss: 0.5"]
    assert messages(filterPattern="%loss: [0-9.]+%") == ["INFO train-loss: 0.5"]
    assert messages(filterPattern="error") == []  # case-sensitive
    assert messages(logStreamNames=["other"]) == ["ERROR elsewhere"]
    assert messages(startTime=base + 1, endTime=base + 3) == ["WARN slow step", "ERROR disk full"]
    assert messages(logStreamNames=["missing"]) == []
    first = call(ctx, "FilterLogEvents", logGroupName=GROUP, filterPattern="INFO")
    assert first["events"][0]["logStreamName"] == "job/algo-1" and first["events"][0]["eventId"]
    assert "nextToken" not in first

    page = call(ctx, "FilterLogEvents", logGroupName=GROUP, limit=2)
    assert len(page["events"]) == 2 and "nextToken" in page
    page = call(ctx, "FilterLogEvents", logGroupName=GROUP, limit=2, nextToken=page["nextToken"])
    assert len(page["events"]) == 2 and "nextToken" in page
    page = call(ctx, "FilterLogEvents", logGroupName=GROUP, limit=2, nextToken=page["nextToken"])
    assert [e["message"] for e in page["events"]] == ["ERROR elsewhere"] and "nextToken" not in page
    # A page that fills exactly with the last matches carries no token either.
    exact = call(ctx, "FilterLogEvents", logGroupName=GROUP, filterPattern="ERROR", limit=2)
    assert len(exact["events"]) == 2 and "nextToken" not in exact

    e = err(ctx, "FilterLogEvents", logGroupName=GROUP, logStreamNames=["a"], logStreamNamePrefix="b")
    assert e.code == "InvalidParameterException"
    assert err(ctx, "FilterLogEvents", logGroupName=GROUP, filterPattern="{ $.a = 1 }").code == (
        "InvalidParameterException"
    )


def test_filter_scan_budget_returns_token(ctx: RequestContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "FILTER_SCAN_BUDGET", 10)
    monkeypatch.setattr(L, "FILTER_CHUNK", 5)
    make_stream(ctx)
    base = L.now_ms() - 60_000
    L.append_events(
        ctx.platform.db,
        GROUP,
        "job/algo-1",
        [(base + i, "noise") for i in range(30)] + [(base + 40, "needle")],
    )
    found: list[str] = []
    token = None
    calls = 0
    while True:
        calls += 1
        kw = {"nextToken": token} if token else {}
        page = call(ctx, "FilterLogEvents", logGroupName=GROUP, filterPattern="needle", **kw)
        found += [e["message"] for e in page["events"]]
        token = page.get("nextToken")
        if not token:
            break
    assert found == ["needle"] and calls > 1


# ------------------------------------------------------------------ internal API


def test_append_events_creates_and_accepts_any_order(ctx: RequestContext) -> None:
    db = ctx.platform.db
    now = L.now_ms()
    assert L.append_events(db, "/new/group", "s", [(now + 5, "b"), (now, "a")]) == 2
    assert L.append_events(db, "/new/group", "s", []) == 0
    assert L.append_events(db, "/new/group", "s", [(now, "")]) == 0  # the model has no empty events
    got = call(ctx, "GetLogEvents", logGroupName="/new/group", logStreamName="s", startFromHead=True)
    assert [e["message"] for e in got["events"]] == ["a", "b"]
    with pytest.raises(AwsError):
        L.append_events(db, "/missing", "s", [(now, "x")], create=False)
    L.ensure_log_stream(db, "/new/group", "t")
    L.ensure_log_stream(db, "/new/group", "t")
    assert len(call(ctx, "DescribeLogStreams", logGroupName="/new/group")["logStreams"]) == 2


def test_expire_events(ctx: RequestContext) -> None:
    db = ctx.platform.db
    now = L.now_ms()
    day = 86_400_000
    L.append_events(db, GROUP, "s", [(now - 3 * day, "old"), (now - 2 * day, "older-ish"), (now, "new")])
    assert L.expire_events(db, now) == 0  # no retention policy: keep everything
    call(ctx, "PutRetentionPolicy", logGroupName=GROUP, retentionInDays=1)
    assert L.expire_events(db, now) == 2
    s = call(ctx, "DescribeLogStreams", logGroupName=GROUP)["logStreams"][0]
    assert s["firstEventTimestamp"] == now


def test_delete_group_removes_events(ctx: RequestContext) -> None:
    db = ctx.platform.db
    L.append_events(db, GROUP, "s", [(L.now_ms(), "x")])
    call(ctx, "DeleteLogGroup", logGroupName=GROUP)
    with db.session() as session:
        assert session.execute(text("SELECT count(*) FROM logs_events")).scalar() == 0
        assert session.execute(text("SELECT count(*) FROM logs_streams")).scalar() == 0


def test_append_throughput(ctx: RequestContext) -> None:
    """Appends are cheap: 20k lines in batches of 1000 well within a second or two."""
    import time

    db = ctx.platform.db
    start = time.perf_counter()
    base = L.now_ms()
    for b in range(20):
        L.append_events(db, GROUP, "s", [(base + b * 1000 + i, f"step {i} loss=0.{i}") for i in range(1000)])
    assert time.perf_counter() - start < 10
    tail = call(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="s", limit=1)
    assert tail["events"][0]["message"] == "step 999 loss=0.999"


def test_pages_are_capped_at_one_megabyte(ctx: RequestContext) -> None:
    make_stream(ctx)
    base = L.now_ms() - 60_000
    big = "x" * 300_000
    L.append_events(ctx.platform.db, GROUP, "job/algo-1", [(base + i, f"{i}{big}") for i in range(5)])
    head = call(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="job/algo-1", startFromHead=True)
    assert [e["message"][0] for e in head["events"]] == ["0", "1", "2"]
    tail = call(ctx, "GetLogEvents", logGroupName=GROUP, logStreamName="job/algo-1")
    assert [e["message"][0] for e in tail["events"]] == ["2", "3", "4"]
    first = call(ctx, "FilterLogEvents", logGroupName=GROUP)
    assert len(first["events"]) == 3 and first["nextToken"]
    rest = call(ctx, "FilterLogEvents", logGroupName=GROUP, nextToken=first["nextToken"])
    assert [e["message"][0] for e in rest["events"]] == ["3", "4"] and "nextToken" not in rest
