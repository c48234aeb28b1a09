"""CloudWatch metrics and alarms over real sockets, in both wire forms botocore may use."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sagestack.testing.server_process import ServerProcess
from tests.integration.training_support import unique


def test_alarm_fires_on_published_metric(server: ServerProcess) -> None:
    cw = server.client("cloudwatch")
    namespace, alarm = unique("App"), unique("latency-high")
    now = datetime.now(UTC)
    cw.put_metric_data(Namespace=namespace, MetricData=[
        {"MetricName": "Latency", "Value": 900.0, "Unit": "Milliseconds", "Timestamp": now - timedelta(seconds=s)}
        # Alarms judge complete periods: cover the last complete minute whatever the second is now.
        for s in (5, 30, 61, 90)])
    cw.put_metric_alarm(AlarmName=alarm, Namespace=namespace, MetricName="Latency", Statistic="Average",
                        Period=60, EvaluationPeriods=1, Threshold=500.0, ComparisonOperator="GreaterThanThreshold",
                        TreatMissingData="notBreaching")
    deadline = time.monotonic() + 40
    state = None
    while time.monotonic() < deadline:
        state = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"]
        if state == "ALARM":
            break
        time.sleep(1)
    assert state == "ALARM"
    stats = cw.get_metric_statistics(Namespace=namespace, MetricName="Latency", StartTime=now - timedelta(minutes=5),
                                     EndTime=now + timedelta(minutes=1), Period=60, Statistics=["Maximum"])
    assert max(d["Maximum"] for d in stats["Datapoints"]) == 900.0
    cw.delete_alarms(AlarmNames=[alarm])
    assert cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"] == []
