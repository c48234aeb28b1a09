"""CloudWatch metric alarms: their storage, state changes, history and periodic evaluation.

The platform calls :func:`evaluate_alarms` periodically (control/housekeeping.py);
it needs only a Database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagestack.arns import resource_arn
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.metrics import AlarmHistory, MetricAlarm
from sagestack.logic import tags
from sagestack.logic.cloudwatch.metrics import (
    STANDARD_STATISTICS,
    buckets,
    dims_key,
    dims_pairs,
    find_metric,
    from_ms,
    to_ms,
    utcnow,
)

COMPARISONS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", lambda v, t: v >= t),
    "GreaterThanThreshold": ("greater than", lambda v, t: v > t),
    "LessThanThreshold": ("less than", lambda v, t: v < t),
    "LessThanOrEqualToThreshold": ("less than or equal to", lambda v, t: v <= t),
}


@dataclass(frozen=True)
class AlarmMetric:
    """What an alarm watches, whichever way PutMetricAlarm described it."""

    namespace: str
    name: str
    dims: list[tuple[str, str]]
    stat: str
    period: int
    unit: str | None


@dataclass(frozen=True)
class AlarmTransition:
    """An alarm whose state changed during :func:`evaluate_alarms` (for actions)."""

    alarm_name: str
    old_state: str
    new_state: str
    reason: str
    actions: list[str]


def alarm_arn(region: str, account: str, name: str) -> str:
    return resource_arn("cloudwatch", region, account, f"alarm:{name}")


def alarm_metric(config: Mapping[str, Any]) -> AlarmMetric:
    if config.get("Metrics"):
        returned = [q for q in config["Metrics"] if q.get("ReturnData", True)]
        stat = returned[0]["MetricStat"]
        metric = stat["Metric"]
        return AlarmMetric(
            metric.get("Namespace", ""),
            metric.get("MetricName", ""),
            dims_pairs(metric.get("Dimensions")),
            stat["Stat"],
            int(stat["Period"]),
            stat.get("Unit"),
        )
    return AlarmMetric(
        config["Namespace"],
        config["MetricName"],
        dims_pairs(config.get("Dimensions")),
        config.get("Statistic") or config["ExtendedStatistic"],
        int(config["Period"]),
        config.get("Unit"),
    )


# --------------------------------------------------------------------------- configuration


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


def save_alarm(db: Database, config: dict[str, Any], arn: str, alarm_tags: Sequence[Mapping[str, str]]) -> None:
    """Create or update the alarm ``config`` describes (PutMetricAlarm without its Tags)."""
    spec = alarm_metric(config)
    now = utcnow()
    name = config["AlarmName"]
    with db.transaction() as session:
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
        alarm.dims_hash = dims_key(spec.dims)[1]
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
        tags.put_tags(session, arn, alarm_tags)


def delete_alarms(db: Database, names: Sequence[str], arn_of: Callable[[str], str]) -> None:
    """Delete alarms and their tags; AWS succeeds quietly for names that do not exist."""
    now = utcnow()
    with db.transaction() as session:
        for name in names:
            alarm = session.get(MetricAlarm, name)
            if alarm is None:
                continue
            session.delete(alarm)
            tags.drop_tags(session, arn_of(name))
            _history(
                session,
                name,
                now,
                "ConfigurationUpdate",
                f'Alarm "{name}" deleted',
                {"version": "1.0", "type": "Delete", "deletedAlarm": json.loads(alarm.config)},
            )


def find_alarms(db: Database, conds: Sequence[Any]) -> list[MetricAlarm]:
    """Alarms matching ``conds`` (SQLAlchemy conditions on MetricAlarm), by name."""
    with db.session() as session:
        return list(session.scalars(select(MetricAlarm).where(*conds).order_by(MetricAlarm.name)).all())


def alarm_history(db: Database, conds: Sequence[Any], descending: bool, limit: int) -> list[AlarmHistory]:
    """Up to ``limit`` history items matching ``conds``, newest first if ``descending``."""
    order = AlarmHistory.id.desc() if descending else AlarmHistory.id
    with db.session() as session:
        return list(session.scalars(select(AlarmHistory).where(*conds).order_by(order).limit(limit)).all())


# --------------------------------------------------------------------------- state


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


def set_alarm_state(db: Database, name: str, state: str, reason: str, data: str | None) -> None:
    """SetAlarmState: the state holds until the next evaluation says otherwise."""
    with db.transaction() as session:
        alarm = session.get(MetricAlarm, name)
        if alarm is None:
            raise AwsError("ResourceNotFound", f"Alarm {name} not found", 404)
        _set_state(session, alarm, state, reason, data, utcnow())


# --------------------------------------------------------------------------- evaluation


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
    spec = alarm_metric(config)
    periods = int(config["EvaluationPeriods"])
    start, end = _window(spec, periods, to_ms(now))
    metric_id = find_metric(session, spec.namespace, spec.name, spec.dims)
    folded = buckets(session, metric_id, start, end, spec.period, spec.unit, spec.stat.startswith("p"))
    step = spec.period * 1000
    points = [(ts, folded[ts].stat(spec.stat) if ts in folded else None) for ts in range(start, end, step)]
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
    now = now or utcnow()
    transitions = []
    with db.transaction() as session:
        for alarm in session.scalars(select(MetricAlarm).order_by(MetricAlarm.name)).all():
            change = _evaluate_one(session, alarm, now)
            if change is not None:
                transitions.append(change)
    return transitions
