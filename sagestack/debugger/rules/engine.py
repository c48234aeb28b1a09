"""The rule engine: parameters, results, the registry type and the replay of rules over job data.

A rule *triggers* when its condition is met at an evaluation point; SageMaker
keeps a rule at ``IssuesFound`` once it has triggered, and so does this
engine. Evaluation points are the saved steps (Debugger rules) or the ends of
``scan_interval_us`` windows over the timeline (profiler rules), replayed on
the data available up to each point. ``RuleResult.triggered`` says how many.

Rules that need a GPU are *not applicable* when the system metrics have no
``GPUUtilization`` records, which is always the case on sagestack today: their
API status stays ``NoIssuesFound`` (AWS has no other status for it) with a
"No GPU ... not applicable" StatusDetails, and ``RuleResult.applicable`` is
False so that reports show them as not applicable rather than passed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagestack.debugger.data import JobData, Series

log = logging.getLogger("sagestack.debugger.rules")

NO_ISSUES = "NoIssuesFound"
ISSUES = "IssuesFound"
ERROR = "Error"
IN_PROGRESS = "InProgress"

MAX_DETAILS = 1024  # StatusDetails length limit of the API
MAX_WINDOWS = 120  # replay at most this many scan windows; longer jobs use wider windows
NO_GPU = "No GPU on this platform: not applicable (this rule analyses GPU utilization)."


class RuleConfigError(ValueError):
    """A rule parameter that does not parse."""


# ------------------------------------------------------------------ results


@dataclass
class Check:
    """What one evaluation of a rule found."""

    triggered: bool
    message: str
    violations: int = 0
    datapoints: int = 0
    step: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    triggers: int | None = None  # evaluation points that triggered, when the rule counts them itself
    evaluated: bool = True  # False: not enough data yet to decide
    #: False: the rule can never fire here (e.g. a GPU rule without a GPU); reports say so instead of "passed".
    applicable: bool = True


@dataclass
class RuleResult:
    rule: str
    status: str
    status_details: str
    triggered: int = 0
    violations: int = 0
    datapoints: int = 0
    step: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    recommendation: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    group: str = ""
    applicable: bool = True

    def report_json(self) -> dict[str, Any]:
        """The per-rule JSON written beside the profiler report."""
        return {
            "RuleTriggered": self.triggered,
            "Violations": self.violations,
            "Datapoints": self.datapoints,
            "RuleParameters": "\n".join(f"{k}:{_fmt_param(v)}" for k, v in self.parameters.items()),
            "Details": self.details,
            "Status": self.status,
            "StatusDetails": self.status_details,
            "Description": self.description,
            "Recommendation": self.recommendation,
            "Notes": self.notes,
            "Applicable": self.applicable,
        }


def _fmt_param(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


# ------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # float | int | bool | str | list
    default: Any


def _parse(p: Param, raw: Any) -> Any:
    text = str(raw).strip()
    if text in ("", "None", "none", "null"):
        return p.default if p.kind != "str" else None
    try:
        if p.kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if p.kind == "int":
            return int(float(text))
        if p.kind == "bool":
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if p.kind == "list":
            return [s.strip() for s in text.split(",") if s.strip()]
        return text
    except ValueError:
        expected = {"float": "a number", "int": "an integer", "bool": "True or False"}.get(p.kind, p.kind)
        raise RuleConfigError(f"Invalid value '{text}' for parameter '{p.name}': expected {expected}.") from None


def parse_params(spec: RuleSpec, raw: Mapping[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    return {p.name: _parse(p, raw[p.name]) if p.name in raw else p.default for p in spec.params}


# ------------------------------------------------------------------ registry


@dataclass(frozen=True)
class RuleSpec:
    name: str
    group: str  # debug | profiler | report
    params: tuple[Param, ...]
    description: str
    recommendation: str
    fn: Callable[[dict[str, Any], JobData], Check] | None = None
    windowed: bool = False  # profiler rule replayed scan window by scan window
    needs_gpu: bool = False


#: A rule family's rules by name; the catalogue (:mod:`sagestack.debugger.rules`) merges the families.
Registry = dict[str, RuleSpec]


def registrar(registry: Registry) -> Callable[..., Callable[[Callable], Callable]]:
    """The decorator factory that adds a family's rules to its ``registry``."""
    def rule(name: str, group: str, params: tuple[Param, ...], description: str, recommendation: str, *,
             windowed: bool = False, needs_gpu: bool = False) -> Callable[[Callable], Callable]:
        def register(fn: Callable[[dict[str, Any], JobData], Check]) -> Callable:
            registry[name] = RuleSpec(name, group, params, description, recommendation, fn, windowed, needs_gpu)
            return fn
        return register
    return rule


SCAN = Param("scan_interval_us", "int", 60_000_000)


# ------------------------------------------------------------------ evaluation


def evaluate_spec(spec: RuleSpec, params: Mapping[str, Any] | None, data: JobData, *,
                  final: bool = True) -> RuleResult:
    """Evaluate one rule. ``final`` is False while the job still runs (undecided -> InProgress)."""
    rule_name = spec.name
    base = RuleResult(rule_name, ERROR, "", description=spec.description, recommendation=spec.recommendation,
                      group=spec.group)
    try:
        base.parameters = parse_params(spec, params)
    except RuleConfigError as exc:
        base.status_details = clip(f"Rule {rule_name}: {exc}")
        return base
    try:
        check, triggers = _run(spec, base.parameters, data)
    except Exception as exc:
        log.exception("rule %s failed", rule_name)
        base.status_details = clip(f"Rule {rule_name} could not be evaluated: {type(exc).__name__}: {exc}")
        return base
    return _result(base, check, triggers, final)


def _run(spec: RuleSpec, p: dict[str, Any], data: JobData) -> tuple[Check, int]:
    assert spec.fn is not None
    if spec.needs_gpu and not data.system.has_gpu:
        return _without_gpu(data), 0
    if not spec.windowed:
        check = spec.fn(p, data)
        return check, check.triggers if check.triggers is not None else int(check.triggered)
    ends = _window_ends(data, p.get("scan_interval_us", SCAN.default))
    triggers = sum(int(spec.fn(p, data.until(t)).triggered) for t in ends[:-1])
    check = spec.fn(p, data)
    return check, triggers + int(check.triggered)


def _window_ends(data: JobData, scan_us: int) -> list[float]:
    start, end = data.job_start, data.job_end
    if start is None or end is None or end <= start:
        return [end or 0.0]
    width = max(scan_us / 1e6, (end - start) / MAX_WINDOWS, 1.0)
    ends = list(np.arange(start + width, end, width))
    return [*ends, end]


def _result(base: RuleResult, check: Check, triggers: int, final: bool) -> RuleResult:
    base.triggered = triggers
    base.violations = check.violations
    base.datapoints = check.datapoints
    base.step = check.step
    base.details = check.details
    base.notes = check.notes
    base.applicable = check.applicable
    if triggers > 0:
        base.status = ISSUES
        where = f" at step {check.step}" if check.step is not None else ""
        base.status_details = clip(f"RuleEvaluationConditionMet: Evaluation of the rule {base.rule}{where} "
                                    f"resulted in the condition being met. {check.message}")
    elif not final:
        base.status = IN_PROGRESS
        base.status_details = clip(check.message)
    else:
        base.status = NO_ISSUES
        base.status_details = clip(check.message)
    return base


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAILS else text[: MAX_DETAILS - 1] + "…"


def stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.percentile(values, [99, 95, 50])
    return {"max": float(np.max(values)), "p99": float(q[0]), "p95": float(q[1]), "p50": float(q[2]),
            "min": float(np.min(values))}


def after(s: Series, patience: int) -> Series:
    return Series(s.t[patience:], s.v[patience:])


def _without_gpu(data: JobData) -> Check:
    """The answer of a GPU rule on a job without GPU metrics: not applicable, with the CPU numbers."""
    details: dict[str, Any] = {}
    for node in data.system.nodes:
        cpu = data.system.cpu_total(node)
        if len(cpu):
            details[node] = {"cpu": stats(cpu.v)}
    points = max((len(data.system.cpu_total(n)) for n in data.system.nodes), default=0)
    return Check(False, NO_GPU, datapoints=points, details={"gpu": False, "nodes": details}, notes=[NO_GPU],
                 applicable=False)
