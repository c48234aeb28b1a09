"""PutMetricData, GetMetricStatistics, GetMetricData, ListMetrics: checks and response shapes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.logic.cloudwatch.metrics import (
    PERCENTILE,
    STANDARD_STATISTICS,
    Agg,
    PreparedDatum,
    aligned_start,
    combination,
    dims_out,
    dims_pairs,
    from_ms,
    invalid,
    is_statistic,
    matching_metrics,
    missing,
    series,
    single_value_row,
    statistics,
    store_datapoints,
    to_ms,
    utcnow,
)
from sagestack.services import RequestContext, operation
from sagestack.services.pagination import decode_offset, encode_token

SERVICE = "cloudwatch"

HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)
MAX_STATISTIC_DATAPOINTS = 1440
MAX_METRIC_DATA = 1000
MAX_VALUES = 150
MAX_PAST = timedelta(days=14)
MAX_FUTURE = timedelta(hours=2)
LIST_METRICS_PAGE = 500
DEFAULT_MAX_DATAPOINTS = 100_800
MAX_QUERIES = 500

_QUERY_ID = re.compile(r"[a-z][A-Za-z0-9_]*")


def invalid_token(_token: str) -> AwsError:
    return AwsError("InvalidNextToken", "The service couldn't process the NextToken.")


def check_period(period: int | None, name: str = "Period") -> int:
    if period is None:
        raise missing(name)
    if (
        period <= 0
        or (period < 60 and period not in HIGH_RESOLUTION_PERIODS)
        or (period >= 60 and period % 60)
    ):
        raise invalid(f"The parameter {name} must be a multiple of 60.")
    return period


def _check_range(start: datetime, end: datetime) -> tuple[int, int]:
    start_ms, end_ms = to_ms(start), to_ms(end)
    if start_ms >= end_ms:
        raise invalid("The parameter StartTime must be less than the parameter EndTime.")
    return start_ms, end_ms


# --------------------------------------------------------------------------- PutMetricData


def _finite(value: Any, name: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise invalid(f"The value {value} for parameter {name} is invalid.")
    return v


def _datum_values(datum: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """count/sum/min/max/values columns from whichever value form the datum uses."""
    given = [k for k in ("Value", "Values", "StatisticValues") if datum.get(k) is not None]
    if len(given) > 1:
        raise combination(
            f"The parameters {prefix}.{given[0]} and {prefix}.{given[1]} are mutually exclusive "
            "and you have specified both."
        )
    if not given:
        raise missing(f"{prefix}.Value")
    if given[0] == "Value":
        return single_value_row(_finite(datum["Value"], f"{prefix}.Value"))
    if given[0] == "Values":
        return _values_counts(datum, prefix)
    return _statistic_set(datum["StatisticValues"], prefix)


def _values_counts(datum: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    values = [_finite(v, f"{prefix}.Values") for v in datum["Values"]]
    counts = datum.get("Counts")
    if counts is None:
        counts = [1.0] * len(values)
    if len(counts) != len(values):
        raise invalid(f"The parameters {prefix}.Values and {prefix}.Counts must be of the same size.")
    if len(values) > MAX_VALUES:
        raise invalid(f"The collection {prefix}.Values must not have a size greater than {MAX_VALUES}.")
    pairs = [(v, _finite(c, f"{prefix}.Counts")) for v, c in zip(values, counts, strict=True)]
    if any(c < 0 for _, c in pairs):
        raise invalid(f"The parameter {prefix}.Counts must not contain negative values.")
    pairs = [(v, c) for v, c in pairs if c > 0]
    if not pairs:
        raise invalid(
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
        raise invalid(f"The parameter {name}.SampleCount must be greater than 0.")
    if low > high:
        raise invalid(f"The parameter {name}.Minimum must be less than or equal to {name}.Maximum.")
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
        raise invalid(
            f"The parameter {prefix}.Timestamp must specify a time no more than two weeks in the past."
        )
    if ts > now + MAX_FUTURE:
        raise invalid(
            f"The parameter {prefix}.Timestamp must specify a time no more than two hours in the future."
        )
    return to_ms(ts)


def _datum_row(datum: Mapping[str, Any], prefix: str, now: datetime) -> dict[str, Any]:
    resolution = datum.get("StorageResolution", 60)
    if resolution not in (1, 60):
        raise invalid(f"The value {resolution} for parameter {prefix}.StorageResolution is invalid.")
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
        raise invalid(f"The value {namespace} for parameter Namespace is invalid.")
    data = list(params.get("MetricData") or [])
    for entity in params.get("EntityMetricData") or []:
        data.extend(entity.get("MetricData") or [])
    if not data:
        raise missing("MetricData")
    if len(data) > MAX_METRIC_DATA:
        raise invalid(f"The collection MetricData must not have a size greater than {MAX_METRIC_DATA}.")
    now = utcnow()
    prepared: list[PreparedDatum] = []
    for i, datum in enumerate(data, start=1):
        prefix = f"MetricData.member.{i}"
        pairs = dims_pairs(datum.get("Dimensions"))
        prepared.append((datum["MetricName"], pairs, _datum_row(datum, prefix, now)))
    store_datapoints(ctx.platform.db, namespace, prepared, now)
    return {}


# --------------------------------------------------------------------------- GetMetricStatistics


def _check_statistics(stats: list[str], extended: list[str]) -> None:
    if not stats and not extended:
        raise combination("Must specify either Statistics or ExtendedStatistics.")
    if len(stats) + len(extended) > 10:
        raise combination("The total number of Statistics and ExtendedStatistics must not exceed 10.")
    for stat in stats:
        if stat not in STANDARD_STATISTICS:
            raise invalid(f"The value {stat} for parameter Statistics is invalid.")
    for stat in extended:
        if not PERCENTILE.fullmatch(stat):
            raise invalid(
                f"The value {stat} for parameter ExtendedStatistics is not a valid percentile (pNN.NN)."
            )


@operation(SERVICE)
def get_metric_statistics(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    stats, extended = list(params.get("Statistics") or []), list(params.get("ExtendedStatistics") or [])
    _check_statistics(stats, extended)
    period = check_period(params.get("Period"))
    start_ms, end_ms = _check_range(params["StartTime"], params["EndTime"])
    start_ms = aligned_start(start_ms, period)
    requested = math.ceil((end_ms - start_ms) / (period * 1000))
    if requested > MAX_STATISTIC_DATAPOINTS:
        raise combination(
            f"You have requested up to {requested} datapoints, which exceeds the limit of "
            f"{MAX_STATISTIC_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, "
            "or decreasing the time range."
        )
    pairs = dims_pairs(params.get("Dimensions"))
    unit = params.get("Unit")
    buckets = statistics(ctx.platform.db, params["Namespace"], params["MetricName"], pairs, start_ms, end_ms,
                         period, unit, bool(extended))
    return {
        "Label": params["MetricName"],
        "Datapoints": [_datapoint(ts, agg, stats, extended, unit) for ts, agg in sorted(buckets.items())],
    }


def _datapoint(ts: int, agg: Agg, stats: list[str], extended: list[str], unit: str | None) -> dict[str, Any]:
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


def query_stat(query: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    """The MetricStat of a query; metric math is refused with a clear message."""
    prefix = f"MetricDataQueries.member.{index}"
    if query.get("Expression"):
        raise invalid(
            f"Metric math expressions are not supported by this server ({prefix}.Expression, "
            f"Id {query['Id']!r}); query metrics with MetricStat instead."
        )
    stat = query.get("MetricStat")
    if not stat:
        raise missing(f"{prefix}.MetricStat")
    if not is_statistic(stat["Stat"]):
        raise invalid(f"The value {stat['Stat']} for parameter {prefix}.MetricStat.Stat is invalid.")
    check_period(stat.get("Period"), f"{prefix}.MetricStat.Period")
    return stat


def _check_queries(queries: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if not queries:
        raise missing("MetricDataQueries")
    if len(queries) > MAX_QUERIES:
        raise invalid(f"The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}.")
    ids = [q["Id"] for q in queries]
    for qid in ids:
        if not _QUERY_ID.fullmatch(qid):
            raise invalid(
                f"The value {qid} for parameter MetricDataQueries.member.Id is invalid: it must start "
                "with a lowercase letter and contain only letters, numbers and underscores."
            )
        if ids.count(qid) > 1:
            raise invalid(f"The value {qid} for parameter MetricDataQueries.member.Id is not unique.")
    return [query_stat(q, i) for i, q in enumerate(queries, start=1)]


@operation(SERVICE)
def get_metric_data(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    queries = list(params["MetricDataQueries"])
    stats = _check_queries(queries)
    start_ms, end_ms = _check_range(params["StartTime"], params["EndTime"])
    ascending = params.get("ScanBy", "TimestampDescending") == "TimestampAscending"
    budget = params.get("MaxDatapoints") or DEFAULT_MAX_DATAPOINTS
    offset = decode_offset(params.get("NextToken"), invalid_token)
    found = series(ctx.platform.db, stats, start_ms, end_ms, ascending)
    # Pages cut through the concatenation of every returned series, in query order.
    returned = [
        (q, s, p) for q, s, p in zip(queries, stats, found, strict=True) if q.get("ReturnData") is not False
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
        out["NextToken"] = encode_token(page_end)
    return out


# --------------------------------------------------------------------------- ListMetrics


@operation(SERVICE)
def list_metrics(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    since = to_ms(utcnow() - timedelta(hours=3)) if params.get("RecentlyActive") == "PT3H" else None
    offset = decode_offset(params.get("NextToken"), invalid_token)
    matched = matching_metrics(ctx.platform.db, params.get("Namespace"), params.get("MetricName"), since,
                           list(params.get("Dimensions") or []))
    page = matched[offset : offset + LIST_METRICS_PAGE]
    out: dict[str, Any] = {
        "Metrics": [
            {"Namespace": m.namespace, "MetricName": m.name, "Dimensions": dims_out(m.dims)} for m in page
        ]
    }
    if offset + LIST_METRICS_PAGE < len(matched):
        out["NextToken"] = encode_token(offset + LIST_METRICS_PAGE)
    return out
