"""CloudWatch metrics: datapoint storage and aggregation (PutMetricData's and the platform's).

Statistics are computed at read time from the stored datapoints: a datapoint
keeps count/sum/min/max and, when the raw values are known, the values
themselves, so percentiles are exact rather than estimated. The platform
publishes with :func:`put_datapoints`, which needs only a Database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.metrics import Metric, MetricDatapoint

STANDARD_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
MAX_DIMENSIONS = 30
PERCENTILE = re.compile(r"p(100(?:\.0+)?|\d{1,2}(?:\.\d+)?)")

#: (metric name, sorted dimension pairs, datapoint row) of one validated datum.
PreparedDatum = tuple[str, list[tuple[str, str]], dict[str, Any]]


# --------------------------------------------------------------------------- errors (the model's query codes)


def invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterValue", message)


def combination(message: str) -> AwsError:
    return AwsError("InvalidParameterCombination", message)


def missing(name: str) -> AwsError:
    return AwsError("MissingParameter", f"The parameter {name} is required.")


# --------------------------------------------------------------------------- time and dimensions


def to_ms(value: datetime | float) -> int:
    """Epoch milliseconds from an aware datetime (naive means UTC) or epoch ms."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def dims_pairs(dimensions: Iterable[Mapping[str, str]] | Mapping[str, str] | None) -> list[tuple[str, str]]:
    """Dimensions as sorted (name, value) pairs; a metric's identity ignores their order."""
    if not dimensions:
        return []
    if isinstance(dimensions, Mapping):
        pairs = [(str(k), str(v)) for k, v in dimensions.items()]
    else:
        pairs = [(d["Name"], d["Value"]) for d in dimensions]
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise invalid(f"The dimension {dup} is specified more than once.")
    if len(pairs) > MAX_DIMENSIONS:
        raise invalid(f"The collection Dimensions must not have a size greater than {MAX_DIMENSIONS}.")
    return sorted(pairs)


def dims_key(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """(canonical JSON, its sha256) for a sorted dimension list."""
    text = json.dumps(pairs, separators=(",", ":"), ensure_ascii=False)
    return text, hashlib.sha256(text.encode()).hexdigest()


def dims_out(dims_json: str) -> list[dict[str, str]]:
    return [{"Name": n, "Value": v} for n, v in json.loads(dims_json)]


def aligned_start(start_ms: int, period: int) -> int:
    """CloudWatch rounds StartTime down to the minute, or to the period for
    sub-minute periods; buckets then follow every ``period`` from there."""
    step = 60_000 if period % 60 == 0 else period * 1000
    return start_ms - start_ms % step


def is_statistic(stat: str) -> bool:
    return stat in STANDARD_STATISTICS or PERCENTILE.fullmatch(stat) is not None


# --------------------------------------------------------------------------- aggregation


@dataclass
class Agg:
    """Datapoints folded into one period."""

    count: float = 0.0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    #: [(value, count)] while every folded datapoint had raw values; None after one did not.
    values: list[tuple[float, float]] | None = field(default_factory=list)
    unit: str | None = None

    def add(self, row: Any, with_values: bool) -> None:
        self.count += row.sample_count
        self.total += row.sum
        self.low = min(self.low, row.minimum)
        self.high = max(self.high, row.maximum)
        self.unit = self.unit or row.unit
        if with_values and self.values is not None:
            if row.values is None:
                self.values = None
            else:
                self.values.extend((float(v), float(c)) for v, c in json.loads(row.values))

    def stat(self, name: str) -> float | None:
        if name == "SampleCount":
            return self.count
        if name == "Sum":
            return self.total
        if name == "Minimum":
            return self.low
        if name == "Maximum":
            return self.high
        if name == "Average":
            return self.total / self.count if self.count else None
        return self._percentile(float(name[1:]))

    def _percentile(self, p: float) -> float | None:
        # Nearest rank over the weighted values; None when only statistic sets
        # were published (AWS cannot compute percentiles for those either).
        if not self.values:
            return None
        ordered = sorted(self.values)
        total = sum(c for _, c in ordered)
        rank = max(1.0, math.ceil(p / 100 * total))
        seen = 0.0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                return value
        return ordered[-1][0]


def find_metric(session: Session, namespace: str, name: str, pairs: list[tuple[str, str]]) -> int | None:
    _, digest = dims_key(pairs)
    return session.scalar(
        select(Metric.id).where(Metric.namespace == namespace, Metric.name == name, Metric.dims_hash == digest)
    )


def buckets(
    session: Session,
    metric_id: int | None,
    start_ms: int,
    end_ms: int,
    period: int,
    unit: str | None,
    with_values: bool,
) -> dict[int, Agg]:
    """Datapoints in [start, end) folded per period; keys are bucket start times (ms)."""
    if metric_id is None:
        return {}
    conds = [
        MetricDatapoint.metric_id == metric_id,
        MetricDatapoint.timestamp >= start_ms,
        MetricDatapoint.timestamp < end_ms,
    ]
    if unit:
        conds.append(MetricDatapoint.unit == unit)
    step = period * 1000
    out: dict[int, Agg] = {}
    for row in session.execute(select(MetricDatapoint).where(*conds)).scalars():
        key = start_ms + (row.timestamp - start_ms) // step * step
        out.setdefault(key, Agg()).add(row, with_values)
    return out


def statistics(db: Database, namespace: str, name: str, pairs: list[tuple[str, str]], start_ms: int, end_ms: int,
               period: int, unit: str | None, with_values: bool) -> dict[int, Agg]:
    """GetMetricStatistics' buckets of one metric."""
    with db.session() as session:
        metric_id = find_metric(session, namespace, name, pairs)
        return buckets(session, metric_id, start_ms, end_ms, period, unit, with_values)


def _series(
    session: Session, stat: Mapping[str, Any], start_ms: int, end_ms: int, ascending: bool
) -> list[tuple[int, float]]:
    metric = stat["Metric"]
    pairs = dims_pairs(metric.get("Dimensions"))
    period = int(stat["Period"])
    start = aligned_start(start_ms, period)
    metric_id = find_metric(session, metric.get("Namespace", ""), metric.get("MetricName", ""), pairs)
    name = stat["Stat"]
    folded = buckets(session, metric_id, start, end_ms, period, stat.get("Unit"), name.startswith("p"))
    points = [(ts, v) for ts, agg in folded.items() if (v := agg.stat(name)) is not None]
    return sorted(points, reverse=not ascending)


def series(db: Database, stats: Sequence[Mapping[str, Any]], start_ms: int, end_ms: int,
           ascending: bool) -> list[list[tuple[int, float]]]:
    """The (timestamp, value) points of each MetricStat, newest first unless ``ascending``."""
    with db.session() as session:
        return [_series(session, s, start_ms, end_ms, ascending) for s in stats]


# --------------------------------------------------------------------------- storage


def _metric_row(session: Session, namespace: str, name: str, pairs: list[tuple[str, str]], now_ms: int) -> int:
    text, digest = dims_key(pairs)
    metric = session.scalar(
        select(Metric).where(Metric.namespace == namespace, Metric.name == name, Metric.dims_hash == digest)
    )
    if metric is None:
        metric = Metric(namespace=namespace, name=name, dims_hash=digest, dims=text, last_put=now_ms)
        session.add(metric)
        session.flush()
    else:
        metric.last_put = max(metric.last_put, now_ms)
    return metric.id


def store_datapoints(db: Database, namespace: str, prepared: Sequence[PreparedDatum], now: datetime) -> None:
    """Insert validated datapoints (PutMetricData's), creating their metrics on first use."""
    now_ms = to_ms(now)
    with db.transaction() as session:
        ids: dict[tuple[str, str], int] = {}
        for name, pairs, row in prepared:
            key = (name, dims_key(pairs)[1])
            if key not in ids:
                ids[key] = _metric_row(session, namespace, name, pairs, now_ms)
            row["metric_id"] = ids[key]
        session.execute(MetricDatapoint.__table__.insert(), [row for _, _, row in prepared])


def single_value_row(value: float) -> dict[str, Any]:
    """The count/sum/min/max/values columns of one plain value."""
    return {"sample_count": 1.0, "sum": value, "minimum": value, "maximum": value, "values": json.dumps([[value, 1]])}


def put_datapoints(
    db: Database,
    namespace: str,
    metric: str,
    dimensions: Mapping[str, str] | Sequence[Mapping[str, str]] | None,
    values: Sequence[tuple[datetime | int, float]],
    *,
    unit: str = "None",
    storage_resolution: int = 60,
) -> int:
    """Publish single values for one metric, without PutMetricData's checks.

    ``dimensions`` is ``{"TrainingJobName": job}`` or a ``[{"Name", "Value"}]``
    list; timestamps are aware datetimes or epoch milliseconds (as log event
    timestamps are). Reserved namespaces such as ``/aws/sagemaker/TrainingJobs``
    are allowed here. Returns the number of datapoints stored.
    """
    if not values:
        return 0
    pairs = dims_pairs(dimensions)
    rows = [
        {"timestamp": to_ms(ts), "unit": unit, "storage_resolution": storage_resolution,
         **single_value_row(float(value))}
        for ts, value in values
    ]
    store_datapoints(db, namespace, [(metric, pairs, row) for row in rows], utcnow())
    return len(rows)


# --------------------------------------------------------------------------- ListMetrics


def _dims_match(dims: list[list[str]], filters: Sequence[Mapping[str, Any]]) -> bool:
    have = dict((n, v) for n, v in dims)
    for f in filters:
        if f["Name"] not in have:
            return False
        if f.get("Value") is not None and have[f["Name"]] != f["Value"]:
            return False
    return True


def matching_metrics(db: Database, namespace: str | None, name: str | None, active_since_ms: int | None,
                 filters: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """Metrics by namespace, name and id that match every dimension filter."""
    conds = []
    if namespace:
        conds.append(Metric.namespace == namespace)
    if name:
        conds.append(Metric.name == name)
    if active_since_ms is not None:
        conds.append(Metric.last_put >= active_since_ms)
    with db.session() as session:
        rows = session.scalars(select(Metric).where(*conds).order_by(Metric.namespace, Metric.name, Metric.id))
        return [m for m in rows if _dims_match(json.loads(m.dims), filters)]
