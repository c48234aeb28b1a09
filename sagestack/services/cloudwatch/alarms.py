"""PutMetricAlarm, DescribeAlarms(ForMetric), DeleteAlarms, SetAlarmState, DescribeAlarmHistory."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.db.models.metrics import AlarmHistory, MetricAlarm
from sagestack.logic.cloudwatch import alarms
from sagestack.logic.cloudwatch.alarms import COMPARISONS
from sagestack.logic.cloudwatch.metrics import PERCENTILE, combination, dims_key, dims_pairs, invalid, missing
from sagestack.services import RequestContext, operation
from sagestack.services.cloudwatch.metrics import check_period, invalid_token, query_stat
from sagestack.services.pagination import decode_offset, encode_token

SERVICE = "cloudwatch"
TREAT_MISSING = ("breaching", "notBreaching", "ignore", "missing")


def _alarm_arn(ctx: RequestContext, name: str) -> str:
    return alarms.alarm_arn(ctx.region, ctx.account_id, name)


# --------------------------------------------------------------------------- PutMetricAlarm


def _check_metric_source(params: Mapping[str, Any]) -> None:
    classic = any(params.get(k) for k in ("MetricName", "Namespace", "Statistic", "ExtendedStatistic"))
    if params.get("Metrics"):
        if classic:
            raise combination(
                "The parameters Metrics and MetricName/Namespace/Statistic are mutually exclusive."
            )
        _check_alarm_queries(params["Metrics"])
        return
    for name in ("MetricName", "Namespace"):
        if not params.get(name):
            raise missing(name)
    if params.get("Statistic") and params.get("ExtendedStatistic"):
        raise combination("The parameters Statistic and ExtendedStatistic are mutually exclusive.")
    if not params.get("Statistic") and not params.get("ExtendedStatistic"):
        raise missing("Statistic or ExtendedStatistic")
    if params.get("ExtendedStatistic") and not PERCENTILE.fullmatch(params["ExtendedStatistic"]):
        raise invalid(f"The value {params['ExtendedStatistic']} for parameter ExtendedStatistic is invalid.")
    check_period(params.get("Period"))


def _check_alarm_queries(queries: list[Mapping[str, Any]]) -> None:
    for i, query in enumerate(queries, start=1):
        query_stat(query, i)
    if len([q for q in queries if q.get("ReturnData", True)]) != 1:
        raise invalid("Exactly one element of the Metrics list must have ReturnData set to true.")


def _check_alarm(params: Mapping[str, Any]) -> None:
    for unsupported in ("ThresholdMetricId", "EvaluationCriteria"):
        if params.get(unsupported):
            raise invalid(f"The parameter {unsupported} is not supported by this server.")
    _check_metric_source(params)
    periods = params.get("EvaluationPeriods")
    if periods is None:
        raise missing("EvaluationPeriods")
    if periods < 1:
        raise invalid("The parameter EvaluationPeriods must be greater than or equal to 1.")
    if params.get("Threshold") is None:
        raise missing("Threshold")
    op = params.get("ComparisonOperator")
    if op is None:
        raise missing("ComparisonOperator")
    if op not in COMPARISONS:
        raise invalid(
            f"The value {op} for parameter ComparisonOperator is not supported without ThresholdMetricId."
        )
    to_alarm = params.get("DatapointsToAlarm")
    if to_alarm is not None and not 1 <= to_alarm <= periods:
        raise invalid("DatapointsToAlarm must be between 1 and EvaluationPeriods.")
    if params.get("TreatMissingData", "missing") not in TREAT_MISSING:
        raise invalid(
            f"The value {params['TreatMissingData']} for parameter TreatMissingData is invalid; "
            f"valid values are {', '.join(TREAT_MISSING)}."
        )


@operation(SERVICE)
def put_metric_alarm(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_alarm(params)
    config = {k: v for k, v in params.items() if k != "Tags"}
    alarms.save_alarm(ctx.platform.db, config, _alarm_arn(ctx, params["AlarmName"]), params.get("Tags") or [])
    return {}


# --------------------------------------------------------------------------- describe


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
        raise combination("The parameters AlarmNames and AlarmNamePrefix are mutually exclusive.")
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
        # The token is the last alarm name returned: names are the listing's order.
        conds.append(MetricAlarm.name > params["NextToken"])
    found = alarms.find_alarms(ctx.platform.db, conds)
    if params.get("ActionPrefix"):
        found = [a for a in found if _has_action(a, params["ActionPrefix"])]
    out: dict[str, Any] = {
        "MetricAlarms": [_alarm_dict(ctx, a) for a in found[:limit]],
        "CompositeAlarms": [],
    }
    if len(found) > limit:
        out["NextToken"] = found[limit - 1].name
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
        conds.append(MetricAlarm.dims_hash == dims_key(dims_pairs(params["Dimensions"]))[1])
    found = alarms.find_alarms(ctx.platform.db, conds)
    wanted = {k: params[k] for k in ("Statistic", "ExtendedStatistic", "Period", "Unit") if params.get(k)}
    matching = [a for a in found if _config_matches(json.loads(a.config), wanted)]
    return {"MetricAlarms": [_alarm_dict(ctx, a) for a in matching]}


def _config_matches(config: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(config.get(k) == v for k, v in wanted.items())


# --------------------------------------------------------------------------- delete, state, history


@operation(SERVICE)
def delete_alarms(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    alarms.delete_alarms(ctx.platform.db, params["AlarmNames"], lambda name: _alarm_arn(ctx, name))
    return {}


@operation(SERVICE)
def set_alarm_state(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    data = params.get("StateReasonData")
    if data is not None:
        try:
            json.loads(data)
        except ValueError as exc:
            raise AwsError("InvalidFormat", "The parameter StateReasonData must be valid JSON.") from exc
    alarms.set_alarm_state(ctx.platform.db, params["AlarmName"], params["StateValue"], params["StateReason"], data)
    return {}


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
        last = decode_offset(params["NextToken"], invalid_token)
        conds.append(AlarmHistory.id < last if descending else AlarmHistory.id > last)
    rows = alarms.alarm_history(ctx.platform.db, conds, descending, limit + 1)
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
        out["NextToken"] = encode_token(rows[limit - 1].id)
    return out
