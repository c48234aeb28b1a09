"""CloudWatch metric and alarm handlers, called directly on a temporary SQLite database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

import sagestack.db.models  # noqa: F401  (registers every table)
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.logic import cloudwatch as CW
from sagestack.platform import Platform
from sagestack.services import RequestContext, lookup
from sagestack.services.cloudwatch import metrics as cw_handlers
from sagestack.services.context import Principal
from sagestack.testing.platforms import bare_platform

ACCOUNT = "123456789012"
NS = "/aws/sagemaker/TrainingJobs"
JOB = [{"Name": "TrainingJobName", "Value": "job-1"}]

MODEL = botocore.session.get_session().get_service_model("cloudwatch")


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
    return RequestContext("cloudwatch", "Test", "us-east-1", "req-1", principal, platform)


def call(ctx: RequestContext, op: str, **params: Any) -> dict[str, Any]:
    handler = lookup("cloudwatch", op)
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


def minute(offset: int = 0) -> datetime:
    """A whole minute a little in the past, plus ``offset`` minutes."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(hours=1) + timedelta(minutes=offset)


# ------------------------------------------------------------------ PutMetricData / GetMetricStatistics


def test_put_and_get_statistics(ctx: RequestContext) -> None:
    t0 = minute()
    call(
        ctx,
        "PutMetricData",
        Namespace="App",
        MetricData=[
            {
                "MetricName": "Latency",
                "Dimensions": [{"Name": "B", "Value": "2"}, {"Name": "A", "Value": "1"}],
                "Timestamp": t0 + timedelta(seconds=5),
                "Value": 10.0,
                "Unit": "Milliseconds",
            },
            {
                "MetricName": "Latency",
                "Dimensions": [{"Name": "A", "Value": "1"}, {"Name": "B", "Value": "2"}],
                "Timestamp": t0 + timedelta(seconds=50),
                "Values": [20.0, 30.0],
                "Counts": [1, 2],
                "Unit": "Milliseconds",
            },
            {
                "MetricName": "Latency",
                "Dimensions": [{"Name": "A", "Value": "1"}, {"Name": "B", "Value": "2"}],
                "Timestamp": t0 + timedelta(minutes=1),
                "StatisticValues": {"SampleCount": 4, "Sum": 8, "Minimum": 1, "Maximum": 3},
            },
        ],
    )
    out = call(
        ctx,
        "GetMetricStatistics",
        Namespace="App",
        MetricName="Latency",
        Dimensions=[{"Name": "A", "Value": "1"}, {"Name": "B", "Value": "2"}],
        StartTime=t0 + timedelta(seconds=30),
        EndTime=t0 + timedelta(minutes=2),
        Period=60,
        Statistics=["SampleCount", "Sum", "Average", "Minimum", "Maximum"],
        ExtendedStatistics=["p50", "p99"],
    )
    assert out["Label"] == "Latency"
    first, second = out["Datapoints"]
    # StartTime is rounded down to the minute, so the 5-second datum is included.
    assert first["Timestamp"] == t0
    assert (first["SampleCount"], first["Sum"], first["Minimum"], first["Maximum"]) == (4, 90, 10, 30)
    assert first["Average"] == 22.5 and first["Unit"] == "Milliseconds"
    assert first["ExtendedStatistics"] == {"p50": 20.0, "p99": 30.0}  # nearest rank over 10, 20, 30, 30
    assert second["Timestamp"] == t0 + timedelta(minutes=1)
    assert (second["SampleCount"], second["Average"]) == (4, 2)
    assert "ExtendedStatistics" not in second  # a statistic set has no raw values


def test_dimensions_must_match_exactly(ctx: RequestContext) -> None:
    t0 = minute()
    call(
        ctx,
        "PutMetricData",
        Namespace="App",
        MetricData=[
            {
                "MetricName": "M",
                "Dimensions": [{"Name": "A", "Value": "1"}, {"Name": "B", "Value": "2"}],
                "Timestamp": t0,
                "Value": 1.0,
            },
        ],
    )
    for dims in (
        [],
        [{"Name": "A", "Value": "1"}],
        [{"Name": "A", "Value": "1"}, {"Name": "B", "Value": "3"}],
    ):
        out = call(
            ctx,
            "GetMetricStatistics",
            Namespace="App",
            MetricName="M",
            Dimensions=dims,
            StartTime=t0,
            EndTime=t0 + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum"],
        )
        assert out["Datapoints"] == []


def test_unit_filter(ctx: RequestContext) -> None:
    t0 = minute()
    call(
        ctx,
        "PutMetricData",
        Namespace="App",
        MetricData=[
            {"MetricName": "M", "Timestamp": t0, "Value": 1.0, "Unit": "Count"},
            {"MetricName": "M", "Timestamp": t0, "Value": 100.0, "Unit": "Seconds"},
        ],
    )
    out = call(
        ctx,
        "GetMetricStatistics",
        Namespace="App",
        MetricName="M",
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum"],
        Unit="Count",
    )
    assert out["Datapoints"] == [{"Timestamp": t0, "Unit": "Count", "Sum": 1.0}]


def test_period_buckets_follow_start_time(ctx: RequestContext) -> None:
    t0 = minute()
    call(
        ctx,
        "PutMetricData",
        Namespace="App",
        MetricData=[
            {"MetricName": "M", "Timestamp": t0 + timedelta(minutes=i), "Value": float(i)} for i in range(10)
        ],
    )
    out = call(
        ctx,
        "GetMetricStatistics",
        Namespace="App",
        MetricName="M",
        StartTime=t0 + timedelta(minutes=2),
        EndTime=t0 + timedelta(minutes=10),
        Period=300,
        Statistics=["Sum", "SampleCount"],
    )
    assert [(p["Timestamp"], p["Sum"], p["SampleCount"]) for p in out["Datapoints"]] == [
        (t0 + timedelta(minutes=2), 2 + 3 + 4 + 5 + 6, 5),
        (t0 + timedelta(minutes=7), 7 + 8 + 9, 3),
    ]


def test_get_metric_statistics_validation(ctx: RequestContext) -> None:
    t0 = minute()
    base = {"Namespace": "App", "MetricName": "M", "StartTime": t0, "EndTime": t0 + timedelta(hours=1)}
    e = err(ctx, "GetMetricStatistics", **base, Period=45, Statistics=["Sum"])
    assert (e.code, e.message) == ("InvalidParameterValue", "The parameter Period must be a multiple of 60.")
    assert (
        err(ctx, "GetMetricStatistics", **base, Period=90, Statistics=["Sum"]).code == "InvalidParameterValue"
    )
    call(
        ctx, "GetMetricStatistics", **base, Period=10, Statistics=["Sum"]
    )  # high-resolution periods are fine
    e = err(ctx, "GetMetricStatistics", **base, Period=1, Statistics=["Sum"])
    assert e.code == "InvalidParameterCombination" and "1440" in e.message
    assert err(ctx, "GetMetricStatistics", **base, Period=60).code == "InvalidParameterCombination"
    assert (
        err(ctx, "GetMetricStatistics", **base, Period=60, Statistics=["Median"]).code
        == "InvalidParameterValue"
    )
    assert err(ctx, "GetMetricStatistics", **base, Period=60, ExtendedStatistics=["p101"]).code == (
        "InvalidParameterValue"
    )
    reversed_range = {**base, "StartTime": base["EndTime"], "EndTime": base["StartTime"]}
    assert err(ctx, "GetMetricStatistics", **reversed_range, Period=60, Statistics=["Sum"]).code == (
        "InvalidParameterValue"
    )


def test_put_metric_data_validation(ctx: RequestContext) -> None:
    now = datetime.now(UTC)

    def bad(**datum: Any) -> AwsError:
        return err(ctx, "PutMetricData", Namespace="App", MetricData=[{"MetricName": "M", **datum}])

    assert bad(Value=1.0, StatisticValues={"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}).code == (
        "InvalidParameterCombination"
    )
    assert bad(Values=[1.0, 2.0], Counts=[1.0]).code == "InvalidParameterValue"
    assert bad(Value=float("nan")).code == "InvalidParameterValue"
    assert bad(Value=1.0, Timestamp=now - timedelta(days=15)).code == "InvalidParameterValue"
    assert bad(Value=1.0, Timestamp=now + timedelta(hours=3)).code == "InvalidParameterValue"
    assert bad(Value=1.0, StorageResolution=5).code == "InvalidParameterValue"
    assert bad().code == "MissingParameter"
    e = err(ctx, "PutMetricData", Namespace="AWS/EC2", MetricData=[{"MetricName": "M", "Value": 1.0}])
    assert e.code == "InvalidParameterValue"
    assert err(ctx, "PutMetricData", Namespace="App", MetricData=[]).code == "MissingParameter"


def test_training_job_analytics_request(ctx: RequestContext) -> None:
    """What sagemaker.analytics.TrainingJobAnalytics sends for each metric."""
    start = minute()
    CW.put_datapoints(
        ctx.platform.db,
        NS,
        "train:loss",
        {"TrainingJobName": "job-1"},
        [(start + timedelta(seconds=10 + 30 * i), 1.0 / (i + 1)) for i in range(6)],
    )
    CW.put_datapoints(ctx.platform.db, NS, "train:loss", {"TrainingJobName": "job-2"}, [(start, 99.0)])
    out = call(
        ctx,
        "GetMetricStatistics",
        Namespace=NS,
        MetricName="train:loss",
        Dimensions=JOB,
        StartTime=start + timedelta(seconds=7),
        EndTime=start + timedelta(minutes=4),
        Period=60,
        Statistics=["Average"],
    )
    points = out["Datapoints"]
    assert [p["Timestamp"] for p in points] == [start + timedelta(minutes=i) for i in range(3)]
    assert points[0]["Average"] == pytest.approx((1 + 1 / 2) / 2)
    assert all(set(p) == {"Timestamp", "Average", "Unit"} for p in points)


def test_put_datapoints_epoch_ms_and_dim_list(ctx: RequestContext) -> None:
    start = minute()
    ms = int(start.timestamp() * 1000)
    assert CW.put_datapoints(ctx.platform.db, NS, "acc", JOB, [(ms, 0.5), (ms + 1000, 0.7)]) == 2
    assert CW.put_datapoints(ctx.platform.db, NS, "acc", JOB, []) == 0
    out = call(
        ctx,
        "GetMetricStatistics",
        Namespace=NS,
        MetricName="acc",
        Dimensions=JOB,
        StartTime=start,
        EndTime=start + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )
    assert out["Datapoints"][0]["Maximum"] == 0.7


# ------------------------------------------------------------------ GetMetricData


def test_get_metric_data(ctx: RequestContext) -> None:
    t0 = minute()
    call(
        ctx,
        "PutMetricData",
        Namespace="App",
        MetricData=[
            {"MetricName": "M", "Dimensions": JOB, "Timestamp": t0 + timedelta(minutes=i), "Value": float(i)}
            for i in range(5)
        ],
    )
    query = {
        "Id": "m1",
        "MetricStat": {
            "Metric": {"Namespace": "App", "MetricName": "M", "Dimensions": JOB},
            "Period": 60,
            "Stat": "Sum",
        },
    }
    out = call(
        ctx,
        "GetMetricData",
        MetricDataQueries=[
            query,
            {**query, "Id": "m2", "Label": "mine", "MetricStat": {**query["MetricStat"], "Stat": "p90"}},
        ],
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=5),
    )
    r1, r2 = out["MetricDataResults"]
    assert r1["Id"] == "m1" and r1["Label"] == "M" and r1["StatusCode"] == "Complete"
    assert r1["Values"] == [4.0, 3.0, 2.0, 1.0, 0.0]  # TimestampDescending by default
    assert r1["Timestamps"][0] == t0 + timedelta(minutes=4)
    assert r2["Label"] == "mine" and r2["Values"] == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert "NextToken" not in out

    asc = call(
        ctx,
        "GetMetricData",
        MetricDataQueries=[query],
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=5),
        ScanBy="TimestampAscending",
        MaxDatapoints=2,
    )
    values: list[float] = []
    while True:
        values += asc["MetricDataResults"][0]["Values"]
        if "NextToken" not in asc:
            assert asc["MetricDataResults"][0]["StatusCode"] == "Complete"
            break
        assert asc["MetricDataResults"][0]["StatusCode"] == "PartialData"
        asc = call(
            ctx,
            "GetMetricData",
            MetricDataQueries=[query],
            StartTime=t0,
            EndTime=t0 + timedelta(minutes=5),
            ScanBy="TimestampAscending",
            MaxDatapoints=2,
            NextToken=asc["NextToken"],
        )
    assert values == [0.0, 1.0, 2.0, 3.0, 4.0]

    hidden = call(
        ctx,
        "GetMetricData",
        MetricDataQueries=[{**query, "ReturnData": False}],
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=5),
    )
    assert hidden["MetricDataResults"] == []
    e = err(
        ctx,
        "GetMetricData",
        MetricDataQueries=[{"Id": "e1", "Expression": "SUM(METRICS())"}],
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=5),
    )
    assert e.code == "InvalidParameterValue" and "not supported" in e.message
    assert (
        err(
            ctx,
            "GetMetricData",
            MetricDataQueries=[{**query, "Id": "Bad"}],
            StartTime=t0,
            EndTime=t0 + timedelta(minutes=5),
        ).code
        == "InvalidParameterValue"
    )
    assert (
        err(
            ctx,
            "GetMetricData",
            MetricDataQueries=[query],
            StartTime=t0,
            EndTime=t0 + timedelta(minutes=5),
            NextToken="garbage",
        ).code
        == "InvalidNextToken"
    )


# ------------------------------------------------------------------ ListMetrics


def test_list_metrics_filters_and_paging(ctx: RequestContext, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = minute()
    call(
        ctx,
        "PutMetricData",
        Namespace="A",
        MetricData=[
            {
                "MetricName": "x",
                "Dimensions": [{"Name": "Host", "Value": "h1"}, {"Name": "Job", "Value": "j"}],
                "Timestamp": t0,
                "Value": 1.0,
            },
            {
                "MetricName": "x",
                "Dimensions": [{"Name": "Host", "Value": "h2"}],
                "Timestamp": t0,
                "Value": 1.0,
            },
            {"MetricName": "y", "Timestamp": t0, "Value": 1.0},
        ],
    )
    call(ctx, "PutMetricData", Namespace="B", MetricData=[{"MetricName": "x", "Timestamp": t0, "Value": 1.0}])
    assert len(call(ctx, "ListMetrics")["Metrics"]) == 4
    assert len(call(ctx, "ListMetrics", Namespace="A")["Metrics"]) == 3
    assert len(call(ctx, "ListMetrics", MetricName="x")["Metrics"]) == 3
    hosts = call(ctx, "ListMetrics", Dimensions=[{"Name": "Host"}])["Metrics"]
    assert len(hosts) == 2
    h1 = call(ctx, "ListMetrics", Dimensions=[{"Name": "Host", "Value": "h1"}])["Metrics"]
    assert h1 == [
        {
            "Namespace": "A",
            "MetricName": "x",
            "Dimensions": [{"Name": "Host", "Value": "h1"}, {"Name": "Job", "Value": "j"}],
        }
    ]
    assert len(call(ctx, "ListMetrics", RecentlyActive="PT3H")["Metrics"]) == 4
    monkeypatch.setattr(cw_handlers, "LIST_METRICS_PAGE", 3)
    page = call(ctx, "ListMetrics")
    assert len(page["Metrics"]) == 3 and page["NextToken"]
    rest = call(ctx, "ListMetrics", NextToken=page["NextToken"])
    assert len(rest["Metrics"]) == 1 and "NextToken" not in rest


# ------------------------------------------------------------------ alarms


def alarm(ctx: RequestContext, name: str = "high-loss", **overrides: Any) -> None:
    params = {
        "AlarmName": name,
        "Namespace": NS,
        "MetricName": "loss",
        "Dimensions": JOB,
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 3,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanThreshold",
        "AlarmActions": ["arn:aws:sns:us-east-1:1:topic"],
    }
    call(ctx, "PutMetricAlarm", **{**params, **overrides})


def state(ctx: RequestContext, name: str = "high-loss") -> dict[str, Any]:
    return call(ctx, "DescribeAlarms", AlarmNames=[name])["MetricAlarms"][0]


def feed(ctx: RequestContext, start: datetime, values: list[float | None]) -> None:
    points = [(start + timedelta(minutes=i, seconds=5), v) for i, v in enumerate(values) if v is not None]
    CW.put_datapoints(ctx.platform.db, NS, "loss", JOB, points)


def test_alarm_crud_and_describe(ctx: RequestContext) -> None:
    alarm(ctx, Tags=[{"Key": "team", "Value": "ml"}])
    alarm(ctx, "other", Threshold=5.0)
    a = state(ctx)
    assert a["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:high-loss"
    assert a["StateValue"] == "INSUFFICIENT_DATA" and a["StateReason"] == "Unchecked: Initial alarm creation"
    assert a["Threshold"] == 1.0 and a["Dimensions"] == JOB and a["ActionsEnabled"] is True
    assert isinstance(a["StateUpdatedTimestamp"], datetime)
    assert [x["AlarmName"] for x in call(ctx, "DescribeAlarms")["MetricAlarms"]] == ["high-loss", "other"]
    assert [x["AlarmName"] for x in call(ctx, "DescribeAlarms", AlarmNamePrefix="oth")["MetricAlarms"]] == [
        "other"
    ]
    page = call(ctx, "DescribeAlarms", MaxRecords=1)
    assert len(page["MetricAlarms"]) == 1 and page["NextToken"]
    page2 = call(ctx, "DescribeAlarms", MaxRecords=1, NextToken=page["NextToken"])
    assert [x["AlarmName"] for x in page2["MetricAlarms"]] == ["other"] and "NextToken" not in page2
    assert len(call(ctx, "DescribeAlarms", ActionPrefix="arn:aws:sns")["MetricAlarms"]) == 2
    assert call(ctx, "DescribeAlarms", AlarmTypes=["CompositeAlarm"])["MetricAlarms"] == []
    assert call(ctx, "DescribeAlarms", StateValue="ALARM")["MetricAlarms"] == []
    for_metric = call(ctx, "DescribeAlarmsForMetric", Namespace=NS, MetricName="loss", Dimensions=JOB)
    assert len(for_metric["MetricAlarms"]) == 2
    assert call(ctx, "DescribeAlarmsForMetric", Namespace=NS, MetricName="loss", Statistic="Maximum") == {
        "MetricAlarms": []
    }
    call(ctx, "DeleteAlarms", AlarmNames=["other", "never-existed"])
    assert [x["AlarmName"] for x in call(ctx, "DescribeAlarms")["MetricAlarms"]] == ["high-loss"]


def test_put_metric_alarm_validation(ctx: RequestContext) -> None:
    def bad(**overrides: Any) -> str:
        with pytest.raises(AwsError) as info:
            alarm(ctx, **overrides)
        return info.value.code

    assert bad(Statistic=None) == "MissingParameter"
    assert bad(ExtendedStatistic="p90") == "InvalidParameterCombination"
    assert bad(EvaluationPeriods=None) == "MissingParameter"
    assert bad(Period=45) == "InvalidParameterValue"
    assert bad(DatapointsToAlarm=4) == "InvalidParameterValue"
    assert bad(TreatMissingData="sometimes") == "InvalidParameterValue"
    assert bad(ComparisonOperator="LessThanLowerThreshold") == "InvalidParameterValue"
    metrics_alarm = {
        "Namespace": None,
        "MetricName": None,
        "Statistic": None,
        "Dimensions": None,
        "Period": None,
        "Metrics": [{"Id": "e1", "Expression": "m1 * 2"}],
    }
    assert bad(**metrics_alarm) == "InvalidParameterValue"


def test_set_alarm_state_and_history(ctx: RequestContext) -> None:
    alarm(ctx)
    call(
        ctx,
        "SetAlarmState",
        AlarmName="high-loss",
        StateValue="ALARM",
        StateReason="testing",
        StateReasonData='{"a": 1}',
    )
    a = state(ctx)
    assert (a["StateValue"], a["StateReason"], a["StateReasonData"]) == ("ALARM", "testing", '{"a": 1}')
    e = err(ctx, "SetAlarmState", AlarmName="nope", StateValue="OK", StateReason="x")
    assert (e.code, e.status) == ("ResourceNotFound", 404)
    assert (
        err(
            ctx,
            "SetAlarmState",
            AlarmName="high-loss",
            StateValue="OK",
            StateReason="x",
            StateReasonData="{not json",
        ).code
        == "InvalidFormat"
    )
    items = call(ctx, "DescribeAlarmHistory", AlarmName="high-loss")["AlarmHistoryItems"]
    assert [i["HistoryItemType"] for i in items] == ["StateUpdate", "ConfigurationUpdate"]
    assert items[0]["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    assert json.loads(items[0]["HistoryData"])["newState"]["stateValue"] == "ALARM"
    only = call(
        ctx, "DescribeAlarmHistory", HistoryItemType="ConfigurationUpdate", ScanBy="TimestampAscending"
    )
    assert [i["HistorySummary"] for i in only["AlarmHistoryItems"]] == ['Alarm "high-loss" created']
    page = call(ctx, "DescribeAlarmHistory", MaxRecords=1)
    assert len(page["AlarmHistoryItems"]) == 1
    rest = call(ctx, "DescribeAlarmHistory", MaxRecords=1, NextToken=page["NextToken"])
    assert (
        rest["AlarmHistoryItems"][0]["HistoryItemType"] == "ConfigurationUpdate" and "NextToken" not in rest
    )


def test_evaluate_alarms_transitions(ctx: RequestContext) -> None:
    db = ctx.platform.db
    start = minute(-10)
    alarm(ctx)
    now = start + timedelta(minutes=3)  # evaluates the 3 complete periods from ``start``
    changes = CW.evaluate_alarms(db, now)
    assert changes == [] and state(ctx)["StateValue"] == "INSUFFICIENT_DATA"
    assert state(ctx)["StateReason"].startswith("Insufficient Data: 3 datapoints were unknown")

    feed(ctx, start, [2.0, 3.0, 4.0])
    changes = CW.evaluate_alarms(db, now)
    assert [(c.alarm_name, c.old_state, c.new_state) for c in changes] == [
        ("high-loss", "INSUFFICIENT_DATA", "ALARM")
    ]
    assert changes[0].actions == ["arn:aws:sns:us-east-1:1:topic"]
    a = state(ctx)
    assert a["StateValue"] == "ALARM" and a["StateReason"].startswith(
        "Threshold Crossed: 3 out of the last 3"
    )
    data = json.loads(a["StateReasonData"])
    assert data["recentDatapoints"] == [2.0, 3.0, 4.0] and data["threshold"] == 1.0 and data["period"] == 60

    feed(ctx, start + timedelta(minutes=3), [0.5])
    changes = CW.evaluate_alarms(db, now + timedelta(minutes=1))
    assert [c.new_state for c in changes] == ["OK"]
    assert CW.evaluate_alarms(db, now + timedelta(minutes=1)) == []  # steady state: no new transition
    history = call(ctx, "DescribeAlarmHistory", AlarmName="high-loss", HistoryItemType="StateUpdate")
    assert [i["HistorySummary"] for i in history["AlarmHistoryItems"]] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from INSUFFICIENT_DATA to ALARM",
    ]


def test_evaluate_datapoints_to_alarm_and_missing_data(ctx: RequestContext) -> None:
    db = ctx.platform.db
    start = minute(-10)
    now = start + timedelta(minutes=3)
    feed(ctx, start, [2.0, None, 0.5])
    alarm(ctx, "m-of-n", DatapointsToAlarm=2)
    alarm(ctx, "as-breaching", DatapointsToAlarm=2, TreatMissingData="breaching")
    alarm(ctx, "as-good", TreatMissingData="notBreaching")
    alarm(ctx, "one-of-three", DatapointsToAlarm=1)
    CW.evaluate_alarms(db, now)
    assert state(ctx, "m-of-n")["StateValue"] == "OK"
    assert state(ctx, "as-breaching")["StateValue"] == "ALARM"
    assert state(ctx, "as-good")["StateValue"] == "OK"
    assert state(ctx, "one-of-three")["StateValue"] == "ALARM"


def test_evaluate_ignore_keeps_state_without_data(ctx: RequestContext) -> None:
    db = ctx.platform.db
    alarm(ctx, TreatMissingData="ignore")
    call(ctx, "SetAlarmState", AlarmName="high-loss", StateValue="ALARM", StateReason="manual")
    assert CW.evaluate_alarms(db, minute()) == []
    assert state(ctx)["StateValue"] == "ALARM" and state(ctx)["StateReason"] == "manual"
    alarm(ctx, "missing-data", TreatMissingData="breaching")
    assert [c.new_state for c in CW.evaluate_alarms(db, minute())] == ["ALARM"]


def test_evaluate_percentile_and_metrics_alarm(ctx: RequestContext) -> None:
    db = ctx.platform.db
    start = minute(-10)
    feed(ctx, start, [5.0])
    feed(ctx, start + timedelta(seconds=20), [0.0])
    feed(ctx, start + timedelta(seconds=30), [0.0])
    query = {
        "Id": "m1",
        "ReturnData": True,
        "MetricStat": {
            "Metric": {"Namespace": NS, "MetricName": "loss", "Dimensions": JOB},
            "Period": 60,
            "Stat": "p90",
        },
    }
    call(
        ctx,
        "PutMetricAlarm",
        AlarmName="p90",
        Metrics=[query],
        EvaluationPeriods=1,
        Threshold=4.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    alarm(ctx, "avg", EvaluationPeriods=1, Threshold=4.0, ComparisonOperator="GreaterThanOrEqualToThreshold")
    CW.evaluate_alarms(db, start + timedelta(minutes=1))
    assert state(ctx, "p90")["StateValue"] == "ALARM"  # p90 of [0, 0, 5] is 5
    assert state(ctx, "avg")["StateValue"] == "OK"  # the average is 5/3
    assert state(ctx, "p90")["Metrics"] == [query]
    assert call(ctx, "DescribeAlarmsForMetric", Namespace=NS, MetricName="loss", Dimensions=JOB)[
        "MetricAlarms"
    ]
