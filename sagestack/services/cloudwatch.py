"""CloudWatch (botocore service "cloudwatch"): metrics, statistics and metric alarms.

Handlers are protocol-agnostic (the service speaks query, JSON 1.0 and CBOR);
error codes are the model's query codes (InvalidParameterValue, ...). The
platform publishes metrics with :func:`put_datapoints` and calls
:func:`evaluate_alarms` periodically; both need only a Database.

Statistics are computed at read time from the stored datapoints: a datapoint
keeps count/sum/min/max and, when the raw values are known, the values
themselves, so percentiles are exact rather than estimated.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.metrics import AlarmHistory, Metric, MetricAlarm, MetricDatapoint
from sagestack.db.models.tags import ResourceTag
from sagestack.services import RequestContext, operation

SERVICE = "cloudwatch"

STANDARD_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)
MAX_STATISTIC_DATAPOINTS = 1440
MAX_METRIC_DATA = 1000
MAX_DIMENSIONS = 30
MAX_VALUES = 150
MAX_PAST = timedelta(days=14)
MAX_FUTURE = timedelta(hours=2)
LIST_METRICS_PAGE = 500
DEFAULT_MAX_DATAPOINTS = 100_800
COMPARISONS = {
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", lambda v, t: v >= t),
    "GreaterThanThreshold": ("greater than", lambda v, t: v > t),
    "LessThanThreshold": ("less than", lambda v, t: v < t),
    "LessThanOrEqualToThreshold": ("less than or equal to", lambda v, t: v <= t),
}
TREAT_MISSING = ("breaching", "notBreaching", "ignore", "missing")
STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")

_PERCENTILE = re.compile(r"p(100(?:\.0+)?|\d{1,2}(?:\.\d+)?)")
_QUERY_ID = re.compile(r"[a-z][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- errors


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterValue", message)


def _combination(message: str) -> AwsError:
    return AwsError("InvalidParameterCombination", message)


def _missing(name: str) -> AwsError:
    return AwsError("MissingParameter", f"The parameter {name} is required.")


# --------------------------------------------------------------------------- helpers


def to_ms(value: datetime | float) -> int:
    """Epoch milliseconds from an aware datetime (naive means UTC) or epoch ms."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _dims_pairs(dimensions: Iterable[Mapping[str, str]] | Mapping[str, str] | None) -> list[tuple[str, str]]:
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
        raise _invalid(f"The dimension {dup} is specified more than once.")
    if len(pairs) > MAX_DIMENSIONS:
        raise _invalid(f"The collection Dimensions must not have a size greater than {MAX_DIMENSIONS}.")
    return sorted(pairs)


def _dims_key(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """(canonical JSON, its sha256) for a sorted dimension list."""
    text = json.dumps(pairs, separators=(",", ":"), ensure_ascii=False)
    return text, hashlib.sha256(text.encode()).hexdigest()


def _dims_out(dims_json: str) -> list[dict[str, str]]:
    return [{"Name": n, "Value": v} for n, v in json.loads(dims_json)]


def _check_period(period: int | None, name: str = "Period") -> int:
    if period is None:
        raise _missing(name)
    if (
        period <= 0
        or (period < 60 and period not in HIGH_RESOLUTION_PERIODS)
        or (period >= 60 and period % 60)
    ):
        raise _invalid(f"The parameter {name} must be a multiple of 60.")
    return period


def _check_range(start: datetime, end: datetime) -> tuple[int, int]:
    start_ms, end_ms = to_ms(start), to_ms(end)
    if start_ms >= end_ms:
        raise _invalid("The parameter StartTime must be less than the parameter EndTime.")
    return start_ms, end_ms


def _aligned_start(start_ms: int, period: int) -> int:
    """CloudWatch rounds StartTime down to the minute, or to the period for
    sub-minute periods; buckets then follow every ``period`` from there."""
    step = 60_000 if period % 60 == 0 else period * 1000
    return start_ms - start_ms % step


def _is_statistic(stat: str) -> bool:
    return stat in STANDARD_STATISTICS or _PERCENTILE.fullmatch(stat) is not None


# --------------------------------------------------------------------------- aggregation


@dataclass
class _Agg:
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


def _find_metric(session: Session, namespace: str, name: str, pairs: list[tuple[str, str]]) -> int | None:
    _, digest = _dims_key(pairs)
    return session.scalar(
        select(Metric.id).where(
            Metric.namespace == namespace, Metric.name == name, Metric.dims_hash == digest
        )
    )


def _buckets(
    session: Session,
    metric_id: int | None,
    start_ms: int,
    end_ms: int,
    period: int,
    unit: str | None,
    with_values: bool,
) -> dict[int, _Agg]:
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
    out: dict[int, _Agg] = {}
    for row in session.execute(select(MetricDatapoint).where(*conds)).scalars():
        key = start_ms + (row.timestamp - start_ms) // step * step
        out.setdefault(key, _Agg()).add(row, with_values)
    return out


# --------------------------------------------------------------------------- internal API


def _metric_row(
    session: Session, namespace: str, name: str, pairs: list[tuple[str, str]], now_ms: int
) -> int:
    text, digest = _dims_key(pairs)
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
    pairs = _dims_pairs(dimensions)
    rows = []
    for ts, value in values:
        v = float(value)
        rows.append(
            {
                "timestamp": to_ms(ts),
                "unit": unit,
                "storage_resolution": storage_resolution,
                "sample_count": 1.0,
                "sum": v,
                "minimum": v,
                "maximum": v,
                "values": json.dumps([[v, 1]]),
            }
        )
    now_ms = to_ms(_utcnow())
    with db.transaction() as session:
        metric_id = _metric_row(session, namespace, metric, pairs, now_ms)
        for row in rows:
            row["metric_id"] = metric_id
        session.execute(MetricDatapoint.__table__.insert(), rows)
    return len(rows)


# --------------------------------------------------------------------------- PutMetricData


def _finite(value: Any, name: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise _invalid(f"The value {value} for parameter {name} is invalid.")
    return v


def _datum_values(datum: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """count/sum/min/max/values columns from whichever value form the datum uses."""
    given = [k for k in ("Value", "Values", "StatisticValues") if datum.get(k) is not None]
    if len(given) > 1:
        raise _combination(
            f"The parameters {prefix}.{given[0]} and {prefix}.{given[1]} are mutually exclusive "
            "and you have specified both."
        )
    if not given:
        raise _missing(f"{prefix}.Value")
    if given[0] == "Value":
        v = _finite(datum["Value"], f"{prefix}.Value")
        return {"sample_count": 1.0, "sum": v, "minimum": v, "maximum": v, "values": json.dumps([[v, 1]])}
    if given[0] == "Values":
        return _values_counts(datum, prefix)
    return _statistic_set(datum["StatisticValues"], prefix)


def _values_counts(datum: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    values = [_finite(v, f"{prefix}.Values") for v in datum["Values"]]
    counts = datum.get("Counts")
    if counts is None:
        counts = [1.0] * len(values)
    if len(counts) != len(values):
        raise _invalid(f"The parameters {prefix}.Values and {prefix}.Counts must be of the same size.")
    if len(values) > MAX_VALUES:
        raise _invalid(f"The collection {prefix}.Values must not have a size greater than {MAX_VALUES}.")
    pairs = [(v, _finite(c, f"{prefix}.Counts")) for v, c in zip(values, counts, strict=True)]
    if any(c < 0 for _, c in pairs):
        raise _invalid(f"The parameter {prefix}.Counts must not contain negative values.")
    pairs = [(v, c) for v, c in pairs if c > 0]
    if not pairs:
        raise _invalid(
            f"The parameter {prefix}.Values must contain at least one value with a positive count."
        )
    return {
        "sample_count": sum(c for _, c in pairs),
        "sum": sum(v * c for v, c in pairs),
        "minimum": min(v for v, _ in pairs),
        "maximum": max(v for v, _ in pairs),
        "values": json.dumps(pairs),
    }


def _statistic_set(stats: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    name = f"{prefix}.StatisticValues"
    count = _finite(stats["SampleCount"], f"{name}.SampleCount")
    low, high = _finite(stats["Minimum"], f"{name}.Minimum"), _finite(stats["Maximum"], f"{name}.Maximum")
    if count <= 0:
        raise _invalid(f"The parameter {name}.SampleCount must be greater than 0.")
    if low > high:
        raise _invalid(f"The parameter {name}.Minimum must be less than or equal to {name}.Maximum.")
    # Raw values are known only when every sample had the same value.
    values = json.dumps([[low, count]]) if count == 1 or low == high else None
    return {
        "sample_count": count,
        "sum": _finite(stats["Sum"], f"{name}.Sum"),
        "minimum": low,
        "maximum": high,
        "values": values,
    }


def _datum_timestamp(datum: Mapping[str, Any], prefix: str, now: datetime) -> int:
    ts = datum.get("Timestamp") or now
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    if ts < now - MAX_PAST:
        raise _invalid(
            f"The parameter {prefix}.Timestamp must specify a time no more than two weeks in the past."
        )
    if ts > now + MAX_FUTURE:
        raise _invalid(
            f"The parameter {prefix}.Timestamp must specify a time no more than two hours in the future."
        )
    return to_ms(ts)


def _datum_row(datum: Mapping[str, Any], prefix: str, now: datetime) -> dict[str, Any]:
    resolution = datum.get("StorageResolution", 60)
    if resolution not in (1, 60):
        raise _invalid(f"The value {resolution} for parameter {prefix}.StorageResolution is invalid.")
    row = _datum_values(datum, prefix)
    row.update(
        timestamp=_datum_timestamp(datum, prefix, now),
        unit=datum.get("Unit") or "None",
        storage_resolution=resolution,
    )
    return row


@operation(SERVICE)
def put_metric_data(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    namespace = params["Namespace"]
    if namespace.startswith("AWS/"):
        raise _invalid(f"The value {namespace} for parameter Namespace is invalid.")
    data = list(params.get("MetricData") or [])
    for entity in params.get("EntityMetricData") or []:
        data.extend(entity.get("MetricData") or [])
    if not data:
        raise _missing("MetricData")
    if len(data) > MAX_METRIC_DATA:
        raise _invalid(f"The collection MetricData must not have a size greater than {MAX_METRIC_DATA}.")
    now = _utcnow()
    prepared = []
    for i, datum in enumerate(data, start=1):
        prefix = f"MetricData.member.{i}"
        pairs = _dims_pairs(datum.get("Dimensions"))
        prepared.append((datum["MetricName"], pairs, _datum_row(datum, prefix, now)))
    now_ms = to_ms(now)
    with ctx.platform.db.transaction() as session:
        ids: dict[tuple[str, str], int] = {}
        for name, pairs, row in prepared:
            key = (name, _dims_key(pairs)[1])
            if key not in ids:
                ids[key] = _metric_row(session, namespace, name, pairs, now_ms)
            row["metric_id"] = ids[key]
        session.execute(MetricDatapoint.__table__.insert(), [row for _, _, row in prepared])
    return {}


# --------------------------------------------------------------------------- GetMetricStatistics


def _check_statistics(stats: list[str], extended: list[str]) -> None:
    if not stats and not extended:
        raise _combination("Must specify either Statistics or ExtendedStatistics.")
    if len(stats) + len(extended) > 10:
        raise _combination("The total number of Statistics and ExtendedStatistics must not exceed 10.")
    for stat in stats:
        if stat not in STANDARD_STATISTICS:
            raise _invalid(f"The value {stat} for parameter Statistics is invalid.")
    for stat in extended:
        if not _PERCENTILE.fullmatch(stat):
            raise _invalid(
                f"The value {stat} for parameter ExtendedStatistics is not a valid percentile (pNN.NN)."
            )


@operation(SERVICE)
def get_metric_statistics(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    stats, extended = list(params.get("Statistics") or []), list(params.get("ExtendedStatistics") or [])
    _check_statistics(stats, extended)
    period = _check_period(params.get("Period"))
    start_ms, end_ms = _check_range(params["StartTime"], params["EndTime"])
    start_ms = _aligned_start(start_ms, period)
    requested = math.ceil((end_ms - start_ms) / (period * 1000))
    if requested > MAX_STATISTIC_DATAPOINTS:
        raise _combination(
            f"You have requested up to {requested} datapoints, which exceeds the limit of "
            f"{MAX_STATISTIC_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, "
            "or decreasing the time range."
        )
    pairs = _dims_pairs(params.get("Dimensions"))
    with ctx.platform.db.session() as session:
        metric_id = _find_metric(session, params["Namespace"], params["MetricName"], pairs)
        buckets = _buckets(session, metric_id, start_ms, end_ms, period, params.get("Unit"), bool(extended))
    return {
        "Label": params["MetricName"],
        "Datapoints": [
            _datapoint(ts, agg, stats, extended, params.get("Unit")) for ts, agg in sorted(buckets.items())
        ],
    }


def _datapoint(ts: int, agg: _Agg, stats: list[str], extended: list[str], unit: str | None) -> dict[str, Any]:
    point: dict[str, Any] = {"Timestamp": from_ms(ts), "Unit": unit or agg.unit or "None"}
    for stat in stats:
        value = agg.stat(stat)
        if value is not None:
            point[stat] = value
    ext = {p: v for p in extended if (v := agg.stat(p)) is not None}
    if ext:
        point["ExtendedStatistics"] = ext
    return point


# --------------------------------------------------------------------------- GetMetricData


def _query_stat(query: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    """The MetricStat of a query; metric math is refused with a clear message."""
    prefix = f"MetricDataQueries.member.{index}"
    if query.get("Expression"):
        raise _invalid(
            f"Metric math expressions are not supported by this server ({prefix}.Expression, "
            f"Id {query['Id']!r}); query metrics with MetricStat instead."
        )
    stat = query.get("MetricStat")
    if not stat:
        raise _missing(f"{prefix}.MetricStat")
    if not _is_statistic(stat["Stat"]):
        raise _invalid(f"The value {stat['Stat']} for parameter {prefix}.MetricStat.Stat is invalid.")
    _check_period(stat.get("Period"), f"{prefix}.MetricStat.Period")
    return stat


def _check_queries(queries: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if not queries:
        raise _missing("MetricDataQueries")
    if len(queries) > 500:
        raise _invalid("The collection MetricDataQueries must not have a size greater than 500.")
    ids = [q["Id"] for q in queries]
    for qid in ids:
        if not _QUERY_ID.fullmatch(qid):
            raise _invalid(
                f"The value {qid} for parameter MetricDataQueries.member.Id is invalid: it must start "
                "with a lowercase letter and contain only letters, numbers and underscores."
            )
        if ids.count(qid) > 1:
            raise _invalid(f"The value {qid} for parameter MetricDataQueries.member.Id is not unique.")
    return [_query_stat(q, i) for i, q in enumerate(queries, start=1)]


def _series(
    session: Session, stat: Mapping[str, Any], start_ms: int, end_ms: int, ascending: bool
) -> list[tuple[int, float]]:
    metric = stat["Metric"]
    pairs = _dims_pairs(metric.get("Dimensions"))
    period = int(stat["Period"])
    start = _aligned_start(start_ms, period)
    metric_id = _find_metric(session, metric.get("Namespace", ""), metric.get("MetricName", ""), pairs)
    name = stat["Stat"]
    buckets = _buckets(session, metric_id, start, end_ms, period, stat.get("Unit"), name.startswith("p"))
    points = [(ts, v) for ts, agg in buckets.items() if (v := agg.stat(name)) is not None]
    return sorted(points, reverse=not ascending)


def _decode_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(token)
    except ValueError as exc:
        raise AwsError("InvalidNextToken", "The service couldn't process the NextToken.") from exc
    if offset < 0:
        raise AwsError("InvalidNextToken", "The service couldn't process the NextToken.")
    return offset


@operation(SERVICE)
def get_metric_data(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    queries = list(params["MetricDataQueries"])
    stats = _check_queries(queries)
    start_ms, end_ms = _check_range(params["StartTime"], params["EndTime"])
    ascending = params.get("ScanBy", "TimestampDescending") == "TimestampAscending"
    budget = params.get("MaxDatapoints") or DEFAULT_MAX_DATAPOINTS
    offset = _decode_offset(params.get("NextToken"))
    with ctx.platform.db.session() as session:
        series = [_series(session, s, start_ms, end_ms, ascending) for s in stats]
    # Pages cut through the concatenation of every returned series, in query order.
    returned = [
        (q, s, p) for q, s, p in zip(queries, stats, series, strict=True) if q.get("ReturnData") is not False
    ]
    page_end = offset + budget
    results, start = [], 0
    for query, stat, points in returned:
        lo, hi = max(offset - start, 0), max(min(page_end - start, len(points)), 0)
        chunk = points[lo:hi]
        start += len(points)
        results.append(
            {
                "Id": query["Id"],
                "Label": query.get("Label") or stat["Metric"].get("MetricName", query["Id"]),
                "Timestamps": [from_ms(ts) for ts, _ in chunk],
                "Values": [v for _, v in chunk],
                "StatusCode": "Complete" if page_end >= start else "PartialData",
            }
        )
    out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if page_end < start:
        out["NextToken"] = str(page_end)
    return out


# --------------------------------------------------------------------------- ListMetrics


def _dims_match(dims: list[list[str]], filters: list[Mapping[str, Any]]) -> bool:
    have = dict((n, v) for n, v in dims)
    for f in filters:
        if f["Name"] not in have:
            return False
        if f.get("Value") is not None and have[f["Name"]] != f["Value"]:
            return False
    return True


@operation(SERVICE)
def list_metrics(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    conds = []
    if params.get("Namespace"):
        conds.append(Metric.namespace == params["Namespace"])
    if params.get("MetricName"):
        conds.append(Metric.name == params["MetricName"])
    if params.get("RecentlyActive") == "PT3H":
        conds.append(Metric.last_put >= to_ms(_utcnow() - timedelta(hours=3)))
    filters = list(params.get("Dimensions") or [])
    offset = _decode_offset(params.get("NextToken"))
    with ctx.platform.db.session() as session:
        rows = session.scalars(
            select(Metric).where(*conds).order_by(Metric.namespace, Metric.name, Metric.id)
        )
        matched = [m for m in rows if _dims_match(json.loads(m.dims), filters)]
    page = matched[offset : offset + LIST_METRICS_PAGE]
    out: dict[str, Any] = {
        "Metrics": [
            {"Namespace": m.namespace, "MetricName": m.name, "Dimensions": _dims_out(m.dims)} for m in page
        ]
    }
    if offset + LIST_METRICS_PAGE < len(matched):
        out["NextToken"] = str(offset + LIST_METRICS_PAGE)
    return out


# --------------------------------------------------------------------------- alarms: configuration


@dataclass(frozen=True)
class AlarmMetric:
    """What an alarm watches, whichever way PutMetricAlarm described it."""

    namespace: str
    name: str
    dims: list[tuple[str, str]]
    stat: str
    period: int
    unit: str | None


def _alarm_metric(config: Mapping[str, Any]) -> AlarmMetric:
    if config.get("Metrics"):
        returned = [q for q in config["Metrics"] if q.get("ReturnData", True)]
        stat = returned[0]["MetricStat"]
        metric = stat["Metric"]
        return AlarmMetric(
            metric.get("Namespace", ""),
            metric.get("MetricName", ""),
            _dims_pairs(metric.get("Dimensions")),
            stat["Stat"],
            int(stat["Period"]),
            stat.get("Unit"),
        )
    return AlarmMetric(
        config["Namespace"],
        config["MetricName"],
        _dims_pairs(config.get("Dimensions")),
        config.get("Statistic") or config["ExtendedStatistic"],
        int(config["Period"]),
        config.get("Unit"),
    )


def _check_metric_source(params: Mapping[str, Any]) -> None:
    classic = any(params.get(k) for k in ("MetricName", "Namespace", "Statistic", "ExtendedStatistic"))
    if params.get("Metrics"):
        if classic:
            raise _combination(
                "The parameters Metrics and MetricName/Namespace/Statistic are mutually exclusive."
            )
        _check_alarm_queries(params["Metrics"])
        return
    for name in ("MetricName", "Namespace"):
        if not params.get(name):
            raise _missing(name)
    if params.get("Statistic") and params.get("ExtendedStatistic"):
        raise _combination("The parameters Statistic and ExtendedStatistic are mutually exclusive.")
    if not params.get("Statistic") and not params.get("ExtendedStatistic"):
        raise _missing("Statistic or ExtendedStatistic")
    if params.get("ExtendedStatistic") and not _PERCENTILE.fullmatch(params["ExtendedStatistic"]):
        raise _invalid(f"The value {params['ExtendedStatistic']} for parameter ExtendedStatistic is invalid.")
    _check_period(params.get("Period"))


def _check_alarm_queries(queries: list[Mapping[str, Any]]) -> None:
    for i, query in enumerate(queries, start=1):
        _query_stat(query, i)
    if len([q for q in queries if q.get("ReturnData", True)]) != 1:
        raise _invalid("Exactly one element of the Metrics list must have ReturnData set to true.")


def _check_alarm(params: Mapping[str, Any]) -> None:
    for unsupported in ("ThresholdMetricId", "EvaluationCriteria"):
        if params.get(unsupported):
            raise _invalid(f"The parameter {unsupported} is not supported by this server.")
    _check_metric_source(params)
    periods = params.get("EvaluationPeriods")
    if periods is None:
        raise _missing("EvaluationPeriods")
    if periods < 1:
        raise _invalid("The parameter EvaluationPeriods must be greater than or equal to 1.")
    if params.get("Threshold") is None:
        raise _missing("Threshold")
    op = params.get("ComparisonOperator")
    if op is None:
        raise _missing("ComparisonOperator")
    if op not in COMPARISONS:
        raise _invalid(
            f"The value {op} for parameter ComparisonOperator is not supported without ThresholdMetricId."
        )
    to_alarm = params.get("DatapointsToAlarm")
    if to_alarm is not None and not 1 <= to_alarm <= periods:
        raise _invalid("DatapointsToAlarm must be between 1 and EvaluationPeriods.")
    if params.get("TreatMissingData", "missing") not in TREAT_MISSING:
        raise _invalid(
            f"The value {params['TreatMissingData']} for parameter TreatMissingData is invalid; "
            f"valid values are {', '.join(TREAT_MISSING)}."
        )


def _alarm_arn(ctx: RequestContext, name: str) -> str:
    return ctx.arn("cloudwatch", f"alarm:{name}")


def _history(session: Session, name: str, when: datetime, kind: str, summary: str, data: Any) -> None:
    session.add(
        AlarmHistory(
            alarm_name=name,
            timestamp=when,
            item_type=kind,
            summary=summary[:255],
            data=json.dumps(data, default=str),
        )
    )


@operation(SERVICE)
def put_metric_alarm(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_alarm(params)
    config = {k: v for k, v in params.items() if k != "Tags"}
    spec = _alarm_metric(config)
    now = _utcnow()
    name = params["AlarmName"]
    with ctx.platform.db.transaction() as session:
        alarm = session.get(MetricAlarm, name)
        created = alarm is None
        if alarm is None:
            # A new alarm starts unchecked; an updated one keeps its state, as in AWS.
            alarm = MetricAlarm(
                name=name,
                state_value="INSUFFICIENT_DATA",
                state_reason="Unchecked: Initial alarm creation",
                state_updated=now,
                state_transitioned=now,
            )
            session.add(alarm)
        alarm.config = json.dumps(config, default=str)
        alarm.namespace, alarm.metric_name = spec.namespace, spec.name
        alarm.dims_hash = _dims_key(spec.dims)[1]
        alarm.config_updated = now
        verb = "created" if created else "updated"
        _history(
            session,
            name,
            now,
            "ConfigurationUpdate",
            f'Alarm "{name}" {verb}',
            {"version": "1.0", "type": "Create" if created else "Update", "updatedAlarm": config},
        )
        if params.get("Tags"):
            _tag_alarm(session, _alarm_arn(ctx, name), params["Tags"])
    return {}


def _tag_alarm(session: Session, arn: str, tags: list[Mapping[str, str]]) -> None:
    existing = {t.key: t for t in session.scalars(select(ResourceTag).where(ResourceTag.resource_arn == arn))}
    for tag in tags:
        if tag["Key"] in existing:
            existing[tag["Key"]].value = tag["Value"]
        else:
            session.add(ResourceTag(resource_arn=arn, key=tag["Key"], value=tag["Value"]))


def _alarm_dict(ctx: RequestContext, alarm: MetricAlarm) -> dict[str, Any]:
    config = json.loads(alarm.config)
    out: dict[str, Any] = {
        "AlarmName": alarm.name,
        "AlarmArn": _alarm_arn(ctx, alarm.name),
        "AlarmConfigurationUpdatedTimestamp": alarm.config_updated,
        "ActionsEnabled": config.get("ActionsEnabled", True),
        "OKActions": config.get("OKActions", []),
        "AlarmActions": config.get("AlarmActions", []),
        "InsufficientDataActions": config.get("InsufficientDataActions", []),
        "StateValue": alarm.state_value,
        "StateReason": alarm.state_reason,
        "StateUpdatedTimestamp": alarm.state_updated,
        "StateTransitionedTimestamp": alarm.state_transitioned,
        "Dimensions": config.get("Dimensions", []),
        "EvaluationPeriods": config["EvaluationPeriods"],
        "Threshold": float(config["Threshold"]),
        "ComparisonOperator": config["ComparisonOperator"],
    }
    if alarm.state_reason_data:
        out["StateReasonData"] = alarm.state_reason_data
    for key in (
        "AlarmDescription",
        "MetricName",
        "Namespace",
        "Statistic",
        "ExtendedStatistic",
        "Period",
        "Unit",
        "DatapointsToAlarm",
        "TreatMissingData",
        "EvaluateLowSampleCountPercentile",
        "Metrics",
    ):
        if config.get(key) is not None:
            out[key] = config[key]
    return out


@operation(SERVICE)
def describe_alarms(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    names, prefix = params.get("AlarmNames"), params.get("AlarmNamePrefix")
    if names and prefix:
        raise _combination("The parameters AlarmNames and AlarmNamePrefix are mutually exclusive.")
    limit = params.get("MaxRecords") or 50
    types = params.get("AlarmTypes") or ["MetricAlarm"]
    if "MetricAlarm" not in types or params.get("ChildrenOfAlarmName") or params.get("ParentsOfAlarmName"):
        # Only metric alarms exist here: composite-alarm queries find nothing.
        return {"MetricAlarms": [], "CompositeAlarms": []}
    conds = []
    if names:
        conds.append(MetricAlarm.name.in_(names))
    if prefix:
        conds.append(MetricAlarm.name.startswith(prefix, autoescape=True))
    if params.get("StateValue"):
        conds.append(MetricAlarm.state_value == params["StateValue"])
    if params.get("NextToken"):
        conds.append(MetricAlarm.name > params["NextToken"])
    with ctx.platform.db.session() as session:
        alarms = session.scalars(select(MetricAlarm).where(*conds).order_by(MetricAlarm.name)).all()
    if params.get("ActionPrefix"):
        alarms = [a for a in alarms if _has_action(a, params["ActionPrefix"])]
    out: dict[str, Any] = {
        "MetricAlarms": [_alarm_dict(ctx, a) for a in alarms[:limit]],
        "CompositeAlarms": [],
    }
    if len(alarms) > limit:
        out["NextToken"] = alarms[limit - 1].name
    return out


def _has_action(alarm: MetricAlarm, prefix: str) -> bool:
    config = json.loads(alarm.config)
    actions = [
        *config.get("OKActions", []),
        *config.get("AlarmActions", []),
        *config.get("InsufficientDataActions", []),
    ]
    return any(a.startswith(prefix) for a in actions)


@operation(SERVICE)
def describe_alarms_for_metric(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    conds = [MetricAlarm.namespace == params["Namespace"], MetricAlarm.metric_name == params["MetricName"]]
    if params.get("Dimensions") is not None:
        conds.append(MetricAlarm.dims_hash == _dims_key(_dims_pairs(params["Dimensions"]))[1])
    with ctx.platform.db.session() as session:
        alarms = session.scalars(select(MetricAlarm).where(*conds).order_by(MetricAlarm.name)).all()
    wanted = {k: params[k] for k in ("Statistic", "ExtendedStatistic", "Period", "Unit") if params.get(k)}
    matching = [a for a in alarms if _config_matches(json.loads(a.config), wanted)]
    return {"MetricAlarms": [_alarm_dict(ctx, a) for a in matching]}


def _config_matches(config: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(config.get(k) == v for k, v in wanted.items())


@operation(SERVICE)
def delete_alarms(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    # AWS succeeds quietly for names that do not exist.
    now = _utcnow()
    with ctx.platform.db.transaction() as session:
        for name in params["AlarmNames"]:
            alarm = session.get(MetricAlarm, name)
            if alarm is None:
                continue
            session.delete(alarm)
            session.execute(delete(ResourceTag).where(ResourceTag.resource_arn == _alarm_arn(ctx, name)))
            _history(
                session,
                name,
                now,
                "ConfigurationUpdate",
                f'Alarm "{name}" deleted',
                {"version": "1.0", "type": "Delete", "deletedAlarm": json.loads(alarm.config)},
            )
    return {}


@operation(SERVICE)
def set_alarm_state(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    data = params.get("StateReasonData")
    if data is not None:
        try:
            json.loads(data)
        except ValueError as exc:
            raise AwsError("InvalidFormat", "The parameter StateReasonData must be valid JSON.") from exc
    with ctx.platform.db.transaction() as session:
        alarm = session.get(MetricAlarm, params["AlarmName"])
        if alarm is None:
            raise AwsError("ResourceNotFound", f"Alarm {params['AlarmName']} not found", 404)
        _set_state(session, alarm, params["StateValue"], params["StateReason"], data, _utcnow())
    return {}


def _set_state(
    session: Session, alarm: MetricAlarm, state: str, reason: str, data: str | None, now: datetime
) -> bool:
    """Record a new state (and a StateUpdate history item on a change); True if it changed."""
    old_state, old_reason = alarm.state_value, alarm.state_reason
    changed = state != old_state
    alarm.state_value, alarm.state_reason, alarm.state_reason_data = state, reason[:1023], data
    alarm.state_updated = now
    if changed:
        alarm.state_transitioned = now
        history = {
            "version": "1.0",
            "oldState": {"stateValue": old_state, "stateReason": old_reason},
            "newState": {
                "stateValue": state,
                "stateReason": reason,
                "stateReasonData": json.loads(data) if data else None,
            },
        }
        _history(
            session, alarm.name, now, "StateUpdate", f"Alarm updated from {old_state} to {state}", history
        )
    return changed


@operation(SERVICE)
def describe_alarm_history(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    types = params.get("AlarmTypes") or ["MetricAlarm"]
    if "MetricAlarm" not in types:
        return {"AlarmHistoryItems": []}
    descending = params.get("ScanBy", "TimestampDescending") == "TimestampDescending"
    limit = params.get("MaxRecords") or 100
    conds = []
    if params.get("AlarmName"):
        conds.append(AlarmHistory.alarm_name == params["AlarmName"])
    if params.get("HistoryItemType"):
        conds.append(AlarmHistory.item_type == params["HistoryItemType"])
    if params.get("StartDate"):
        conds.append(AlarmHistory.timestamp >= params["StartDate"])
    if params.get("EndDate"):
        conds.append(AlarmHistory.timestamp <= params["EndDate"])
    if params.get("NextToken"):
        last = _decode_offset(params["NextToken"])
        conds.append(AlarmHistory.id < last if descending else AlarmHistory.id > last)
    order = AlarmHistory.id.desc() if descending else AlarmHistory.id
    with ctx.platform.db.session() as session:
        rows = session.scalars(select(AlarmHistory).where(*conds).order_by(order).limit(limit + 1)).all()
    items = [
        {
            "AlarmName": r.alarm_name,
            "AlarmType": "MetricAlarm",
            "Timestamp": r.timestamp,
            "HistoryItemType": r.item_type,
            "HistorySummary": r.summary,
            "HistoryData": r.data,
        }
        for r in rows[:limit]
    ]
    out: dict[str, Any] = {"AlarmHistoryItems": items}
    if len(rows) > limit:
        out["NextToken"] = str(rows[limit - 1].id)
    return out


# --------------------------------------------------------------------------- alarm evaluation


@dataclass(frozen=True)
class AlarmTransition:
    """An alarm whose state changed during :func:`evaluate_alarms` (for actions)."""

    alarm_name: str
    old_state: str
    new_state: str
    reason: str
    actions: list[str]


def _fmt_time(ms: int) -> str:
    return from_ms(ms).strftime("%d/%m/%y %H:%M:%S")


def _fmt_points(points: list[tuple[int, float]]) -> str:
    return "[" + ", ".join(f"{v} ({_fmt_time(ts)})" for ts, v in points) + "]"


def _decide(config: Mapping[str, Any], points: list[tuple[int, float | None]]) -> tuple[str | None, str]:
    """The new state (None: keep the current one) and its reason, from the last N periods.

    Missing periods count as breaching or not under those TreatMissingData
    settings; under "missing" and "ignore" they are left out, and an all-missing
    window means INSUFFICIENT_DATA or, for "ignore", no change.
    """
    threshold = float(config["Threshold"])
    phrase, compare = COMPARISONS[config["ComparisonOperator"]]
    n = len(points)
    needed = config.get("DatapointsToAlarm") or n
    treat = config.get("TreatMissingData", "missing")
    present = [(ts, v) for ts, v in points if v is not None]
    breaching = [(ts, v) for ts, v in present if compare(v, threshold)]
    missing = n - len(present)
    n_breaching = len(breaching) + (missing if treat == "breaching" else 0)
    recent = sorted(present, reverse=True)
    if n_breaching >= needed:
        shown = sorted(breaching, reverse=True)
        return "ALARM", (
            f"Threshold Crossed: {n_breaching} out of the last {n} datapoints {_fmt_points(shown)} "
            f"{'was' if n_breaching == 1 else 'were'} {phrase} the threshold ({threshold}) "
            f"(minimum {needed} datapoint{'s' if needed != 1 else ''} for OK -> ALARM transition)."
        )
    if not present and treat in ("missing", "ignore"):
        if treat == "ignore":
            return None, ""
        return "INSUFFICIENT_DATA", (
            f"Insufficient Data: {missing} datapoint{'s were' if missing != 1 else ' was'} unknown."
        )
    # Substituted missing periods count as good ones only under notBreaching.
    ok_count = n - n_breaching if treat == "notBreaching" else len(present) - len(breaching)
    return "OK", (
        f"Threshold Crossed: {ok_count} out of the last {n} datapoints {_fmt_points(recent)} "
        f"{'was' if ok_count == 1 else 'were'} not {phrase} the threshold ({threshold}) "
        f"(minimum 1 datapoint for ALARM -> OK transition)."
    )


def _window(spec: AlarmMetric, periods: int, now_ms: int) -> tuple[int, int]:
    """The last ``periods`` complete periods before ``now``, aligned to the epoch."""
    step = spec.period * 1000
    end = now_ms - now_ms % step
    return end - periods * step, end


def _evaluate_one(session: Session, alarm: MetricAlarm, now: datetime) -> AlarmTransition | None:
    config = json.loads(alarm.config)
    spec = _alarm_metric(config)
    periods = int(config["EvaluationPeriods"])
    start, end = _window(spec, periods, to_ms(now))
    metric_id = _find_metric(session, spec.namespace, spec.name, spec.dims)
    buckets = _buckets(session, metric_id, start, end, spec.period, spec.unit, spec.stat.startswith("p"))
    step = spec.period * 1000
    points = [(ts, buckets[ts].stat(spec.stat) if ts in buckets else None) for ts in range(start, end, step)]
    state, reason = _decide(config, points)
    if state is None or (state == alarm.state_value and reason == alarm.state_reason):
        return None
    data = json.dumps(
        {
            "version": "1.0",
            "queryDate": now.isoformat(),
            "startDate": from_ms(start).isoformat(),
            "statistic" if spec.stat in STANDARD_STATISTICS else "extendedStatistic": spec.stat,
            "period": spec.period,
            "recentDatapoints": [v for _, v in points if v is not None],
            "threshold": float(config["Threshold"]),
            "evaluatedDatapoints": [
                {"timestamp": from_ms(ts).isoformat(), **({"value": v} if v is not None else {})}
                for ts, v in reversed(points)
            ],
        }
    )
    old = alarm.state_value
    if not _set_state(session, alarm, state, reason, data, now):
        return None
    actions_key = {"OK": "OKActions", "ALARM": "AlarmActions"}.get(state, "InsufficientDataActions")
    actions = config.get(actions_key, []) if config.get("ActionsEnabled", True) else []
    return AlarmTransition(alarm.name, old, state, reason, list(actions))


def evaluate_alarms(db: Database, now: datetime | None = None) -> list[AlarmTransition]:
    """Evaluate every metric alarm as of ``now`` and store the outcomes.

    Deterministic for a given ``now`` and datapoint set, so tests pass their own
    clock. Returns the alarms whose state changed, with the actions configured
    for the new state (sagestack performs none itself).
    """
    now = now or _utcnow()
    transitions = []
    with db.transaction() as session:
        for alarm in session.scalars(select(MetricAlarm).order_by(MetricAlarm.name)).all():
            change = _evaluate_one(session, alarm, now)
            if change is not None:
                transitions.append(change)
    return transitions
