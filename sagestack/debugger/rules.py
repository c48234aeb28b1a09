"""SageMaker Debugger's built-in XGBoost and profiler rules, evaluated over local job data.

``evaluate(rule_name, params, data)`` runs one rule. ``params`` are the
``RuleParameters`` strings of the rule configuration (unknown keys such as
``rule_to_invoke`` are ignored; a value that does not parse is an ``Error``).
Parameters and defaults are those AWS documents (for profiler rules, the
values the SDK's rule configurations ship with). The logic is sagestack's own
reading of the rule descriptions; where the description is ambiguous the
choice is stated in the rule's docstring.

A rule *triggers* when its condition is met at an evaluation point; SageMaker
keeps a rule at ``IssuesFound`` once it has triggered, and so does this
module. Evaluation points are the saved steps (Debugger rules) or the ends of
``scan_interval_us`` windows over the timeline (profiler rules), replayed on
the data available up to each point. ``RuleResult.triggered`` says how many.

Rules that need a GPU return ``NoIssuesFound`` with a "no GPU" note when the
system metrics have no ``GPUUtilization`` records, which is always the case on
sagestack today.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagestack.algorithms.xgboost.metrics import MAXIMIZE_METRICS
from sagestack.debugger.data import JobData, Series

log = logging.getLogger(__name__)

NO_ISSUES = "NoIssuesFound"
ISSUES = "IssuesFound"
ERROR = "Error"
IN_PROGRESS = "InProgress"

MAX_DETAILS = 1024  # StatusDetails length limit of the API
MAX_WINDOWS = 120  # replay at most this many scan windows; longer jobs use wider windows
NO_GPU = "No GPU on this instance: this rule analyses GPU utilization and does not apply."

#: Error-rate metrics are not losses; the loss rules skip them unless a tensor_regex asks for them.
_RATE_METRICS = ("error", "merror")


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


RULES: dict[str, RuleSpec] = {}


def _rule(name: str, group: str, params: tuple[Param, ...], description: str, recommendation: str, *,
          windowed: bool = False, needs_gpu: bool = False) -> Callable[[Callable], Callable]:
    def register(fn: Callable[[dict[str, Any], JobData], Check]) -> Callable:
        RULES[name] = RuleSpec(name, group, params, description, recommendation, fn, windowed, needs_gpu)
        return fn
    return register


SCAN = Param("scan_interval_us", "int", 60_000_000)

#: Sub-rules of ProfilerReport, in the order of its per-rule JSON files.
PROFILER_REPORT_RULES = (
    "BatchSize", "CPUBottleneck", "Dataloader", "GPUMemoryIncrease", "IOBottleneck", "LoadBalancing",
    "LowGPUUtilization", "MaxInitializationTime", "OverallFrameworkMetrics", "OverallSystemUsage", "StepOutlier",
)


# ------------------------------------------------------------------ evaluation


def evaluate(rule_name: str, params: Mapping[str, Any] | None, data: JobData, *, final: bool = True) -> RuleResult:
    """Evaluate one built-in rule. ``final`` is False while the job still runs (undecided -> InProgress)."""
    spec = RULES.get(rule_name)
    if spec is None or spec.fn is None:
        known = ", ".join(sorted(n for n, s in RULES.items() if s.fn is not None))
        return RuleResult(rule_name, ERROR, _clip(f"Unknown rule '{rule_name}'. Built-in rules supported by "
                                                  f"sagestack: {known}."))
    base = RuleResult(rule_name, ERROR, "", description=spec.description, recommendation=spec.recommendation,
                      group=spec.group)
    try:
        base.parameters = parse_params(spec, params)
    except RuleConfigError as exc:
        base.status_details = _clip(f"Rule {rule_name}: {exc}")
        return base
    try:
        check, triggers = _run(spec, base.parameters, data)
    except Exception as exc:
        log.exception("rule %s failed", rule_name)
        base.status_details = _clip(f"Rule {rule_name} could not be evaluated: {type(exc).__name__}: {exc}")
        return base
    return _result(base, check, triggers, final)


def _run(spec: RuleSpec, p: dict[str, Any], data: JobData) -> tuple[Check, int]:
    assert spec.fn is not None
    if spec.needs_gpu and not data.system.has_gpu:
        return _no_gpu_check(spec, p, data), 0
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
    if triggers > 0:
        base.status = ISSUES
        where = f" at step {check.step}" if check.step is not None else ""
        base.status_details = _clip(f"RuleEvaluationConditionMet: Evaluation of the rule {base.rule}{where} "
                                    f"resulted in the condition being met. {check.message}")
    elif not final:
        base.status = IN_PROGRESS
        base.status_details = _clip(check.message)
    else:
        base.status = NO_ISSUES
        base.status_details = _clip(check.message)
    return base


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAILS else text[: MAX_DETAILS - 1] + "…"


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.percentile(values, [99, 95, 50])
    return {"max": float(np.max(values)), "p99": float(q[0]), "p95": float(q[1]), "p50": float(q[2]),
            "min": float(np.min(values))}


def _after(s: Series, patience: int) -> Series:
    return Series(s.t[patience:], s.v[patience:])


# ------------------------------------------------------------------ profiler rules: system metrics


def _no_gpu_check(spec: RuleSpec, p: dict[str, Any], data: JobData) -> Check:
    details: dict[str, Any] = {}
    for node in data.system.nodes:
        cpu = data.system.cpu_total(node)
        if len(cpu):
            details[node] = {"cpu": _stats(cpu.v)}
    points = max((len(data.system.cpu_total(n)) for n in data.system.nodes), default=0)
    return Check(False, NO_GPU, datapoints=points, details={"gpu": False, "nodes": details}, notes=[NO_GPU])


def _bottleneck(p: dict[str, Any], data: JobData, other_dim: str | None, other_threshold: float,
                what: str) -> Check:
    """Share of time with idle GPUs while CPU (or I/O wait) is high, per node."""
    violations = points = 0
    nodes: dict[str, Any] = {}
    worst = 0.0
    for node in data.system.nodes:
        gpu = data.system.mean_of(node, "GPUUtilization")
        other = data.system.cpu_total(node) if other_dim is None else data.system.mean_of(node, other_dim)
        _, gi, oi = np.intersect1d(gpu.t, other.t, return_indices=True)
        g, o = gpu.v[gi][p["patience"]:], other.v[oi][p["patience"]:]
        if len(g) == 0:
            continue
        low_gpu = g < p["gpu_threshold"]
        hits = int(np.sum(low_gpu & (o > other_threshold)))
        share = 100.0 * hits / len(g)
        worst = max(worst, share)
        violations += hits
        points += len(g)
        nodes[node] = {"bottleneck_percent": share, "low_gpu_percent": 100.0 * float(np.mean(low_gpu)),
                       "datapoints": len(g)}
    triggered = points > 0 and worst > p["threshold"]
    if points == 0:
        msg = f"Not enough datapoints yet (patience {p['patience']})."
    else:
        msg = (f"{what} bottlenecks {worst:.1f}% of the time (threshold {p['threshold']}%): GPU below "
               f"{p['gpu_threshold']}% while {what} above {other_threshold}%.")
    return Check(triggered, msg, violations, points, details={"nodes": nodes}, evaluated=points > 0)


@_rule("CPUBottleneck", "profiler",
       (Param("threshold", "float", 50.0), Param("gpu_threshold", "float", 10.0),
        Param("cpu_threshold", "float", 90.0), Param("patience", "int", 1000), SCAN),
       "Detects GPUs left idle because the CPUs are saturated: the share of time with GPU utilization below "
       "gpu_threshold while CPU utilization is above cpu_threshold, compared with threshold (percent).",
       "Move preprocessing off the training instance, use more data-loading workers or an instance with "
       "more vCPUs per GPU.", windowed=True, needs_gpu=True)
def cpu_bottleneck(p: dict[str, Any], data: JobData) -> Check:
    return _bottleneck(p, data, None, p["cpu_threshold"], "CPU")


@_rule("IOBottleneck", "profiler",
       (Param("threshold", "float", 50.0), Param("gpu_threshold", "float", 10.0),
        Param("io_threshold", "float", 50.0), Param("patience", "int", 1000), SCAN),
       "Detects GPUs left idle while the CPUs wait for I/O: the share of time with GPU utilization below "
       "gpu_threshold while I/O wait is above io_threshold, compared with threshold (percent).",
       "Use faster storage or a streaming input mode, prefetch data, or shard the data into more files.",
       windowed=True, needs_gpu=True)
def io_bottleneck(p: dict[str, Any], data: JobData) -> Check:
    return _bottleneck(p, data, "I/OWaitPercentage", p["io_threshold"], "I/O wait")


@_rule("LowGPUUtilization", "profiler",
       (Param("threshold_p95", "float", 70.0), Param("threshold_p5", "float", 10.0), Param("window", "int", 500),
        Param("patience", "int", 1000), SCAN),
       "Checks every GPU: a 95th percentile below threshold_p95 over the last window datapoints means the GPU "
       "is underused; a high 95th but a 5th percentile below threshold_p5 means utilization fluctuates.",
       "Increase the batch size or use a smaller instance; for fluctuations, look for data-loading stalls.",
       windowed=True, needs_gpu=True)
def low_gpu_utilization(p: dict[str, Any], data: JobData) -> Check:
    flagged, points, gpus = [], 0, {}
    for node in data.system.nodes:
        for name, s in data.system.gpus(node).items():
            v = _after(s, p["patience"]).v[-p["window"]:]
            if len(v) == 0:
                continue
            points += len(v)
            p95, p5 = np.percentile(v, [95, 5])
            kind = "underutilized" if p95 < p["threshold_p95"] else (
                "fluctuating" if p5 < p["threshold_p5"] else "")
            gpus[f"{node}/{name}"] = {"p95": float(p95), "p5": float(p5), "issue": kind}
            if kind:
                flagged.append(f"{node}/{name} {kind}")
    msg = ("GPUs with low or fluctuating utilization: " + ", ".join(flagged)) if flagged else \
        "All GPUs well utilized."
    return Check(bool(flagged), msg, len(flagged), points, details={"gpus": gpus}, evaluated=points > 0)


@_rule("GPUMemoryIncrease", "profiler",
       (Param("increase", "float", 5.0), Param("patience", "int", 1000), Param("window", "int", 10), SCAN),
       "Detects large increases of GPU memory use: the moving average over window datapoints rising by more "
       "than increase percentage points from one window to the next.",
       "Look for tensors kept alive across steps (e.g. accumulated losses) or choose a GPU with more memory.",
       windowed=True, needs_gpu=True)
def gpu_memory_increase(p: dict[str, Any], data: JobData) -> Check:
    flagged, points, gpus = [], 0, {}
    w = max(p["window"], 1)
    for node in data.system.nodes:
        for name, s in data.system.by_dimension(node, "GPUMemoryUtilization").items():
            v = _after(s, p["patience"]).v
            n = len(v) // w
            points += len(v)
            if n < 2:
                continue
            means = v[: n * w].reshape(n, w).mean(axis=1)
            jump = float(np.max(np.diff(means)))
            gpus[f"{node}/{name}"] = {"max_increase": jump}
            if jump > p["increase"]:
                flagged.append(f"{node}/{name} +{jump:.1f} points")
    msg = ("GPU memory grew fast on " + ", ".join(flagged)) if flagged else "No large GPU memory increase."
    return Check(bool(flagged), msg, len(flagged), points, details={"gpus": gpus}, evaluated=points > 0)


@_rule("BatchSize", "profiler",
       (Param("cpu_threshold_p95", "float", 70.0), Param("gpu_threshold_p95", "float", 70.0),
        Param("gpu_memory_threshold_p95", "float", 70.0), Param("patience", "int", 1000),
        Param("window", "int", 500), SCAN),
       "Detects a batch size too small for the instance: 95th percentiles of CPU, GPU and GPU memory "
       "utilization over the last window datapoints all below their thresholds.",
       "Increase the batch size or pick a smaller instance type.", windowed=True, needs_gpu=True)
def batch_size(p: dict[str, Any], data: JobData) -> Check:
    flagged, points, nodes = [], 0, {}
    for node in data.system.nodes:
        parts = {"cpu": data.system.cpu_total(node), "gpu": data.system.mean_of(node, "GPUUtilization"),
                 "gpu_memory": data.system.mean_of(node, "GPUMemoryUtilization")}
        tails = {k: _after(s, p["patience"]).v[-p["window"]:] for k, s in parts.items()}
        if any(len(v) == 0 for v in tails.values()):
            continue
        points += len(tails["cpu"])
        p95 = {k: float(np.percentile(v, 95)) for k, v in tails.items()}
        nodes[node] = p95
        if (p95["cpu"] < p["cpu_threshold_p95"] and p95["gpu"] < p["gpu_threshold_p95"]
                and p95["gpu_memory"] < p["gpu_memory_threshold_p95"]):
            flagged.append(node)
    msg = ("Low CPU, GPU and GPU memory use on " + ", ".join(flagged)) if flagged else \
        "Resources are used enough for the batch size."
    return Check(bool(flagged), msg, len(flagged), points, details={"nodes": nodes}, evaluated=points > 0)


@_rule("LoadBalancing", "profiler", (Param("threshold", "float", 0.5), Param("patience", "int", 1000), SCAN),
       "Compares the utilization histograms of the GPUs of each node; a distance above threshold "
       "(0 = same, 1 = disjoint) means the work is not balanced across GPUs.",
       "Check the distribution strategy and that every GPU gets the same share of data.",
       windowed=True, needs_gpu=True)
def load_balancing(p: dict[str, Any], data: JobData) -> Check:
    flagged, points, pairs = [], 0, {}
    bins = np.linspace(0, 100, 21)
    for node in data.system.nodes:
        hists = {}
        for name, s in data.system.gpus(node).items():
            v = _after(s, p["patience"]).v
            points += len(v)
            if len(v):
                h, _ = np.histogram(v, bins=bins)
                hists[name] = h / h.sum()
        names = sorted(hists)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                dist = 0.5 * float(np.abs(hists[a] - hists[b]).sum())
                pairs[f"{node}/{a}-{b}"] = dist
                if dist > p["threshold"]:
                    flagged.append(f"{node} {a}/{b} ({dist:.2f})")
    if not pairs:
        msg = "Fewer than two GPUs per node: nothing to balance."
    else:
        msg = ("Unbalanced GPUs: " + ", ".join(flagged)) if flagged else "GPU workloads are balanced."
    return Check(bool(flagged), msg, len(flagged), points, details={"pairs": pairs}, evaluated=points > 0)


@_rule("OverallSystemUsage", "profiler", (SCAN,),
       "Summarises system usage per node (max, p99, p95, p50, min of each metric). It never triggers.",
       "Use the statistics to size the instance: low CPU and memory use means a smaller instance would do.")
def overall_system_usage(p: dict[str, Any], data: JobData) -> Check:
    nodes = {node: system_usage(data, node) for node in data.system.nodes}
    points = len(data.system.timestamps())
    msg = f"System usage summarised over {points} samples on {len(nodes)} node(s)." if nodes else \
        "No system metrics recorded."
    return Check(False, msg, 0, points, details={"nodes": nodes}, evaluated=bool(nodes))


def system_usage(data: JobData, node: str) -> dict[str, dict[str, Any]]:
    """Statistics of each system metric of a node, for the report's usage table."""
    sysm = data.system
    metrics: list[tuple[str, str, Series]] = [
        ("CPU", "%", sysm.cpu_total(node)),
        ("I/O wait", "%", sysm.mean_of(node, "I/OWaitPercentage")),
        ("CPU memory", "%", sysm.get(node, "memory", "MemoryUsedPercent")),
        ("GPU", "%", sysm.mean_of(node, "GPUUtilization")),
        ("GPU memory", "%", sysm.mean_of(node, "GPUMemoryUtilization")),
        ("Disk read", "bytes/s", sysm.get(node, "i/o", "ReadThroughputInBytesPerSecond")),
        ("Disk write", "bytes/s", sysm.get(node, "i/o", "WriteThroughputInBytesPerSecond")),
        ("Disk IOPS", "ops/s", sysm.get(node, "i/o", "IOPS")),
        ("Network receive", "bytes/s", sysm.get(node, "network", "ReceiveBytesPerSecond", "Platform")),
        ("Network transmit", "bytes/s", sysm.get(node, "network", "TransmitBytesPerSecond", "Platform")),
        ("Training processes CPU", "%", sysm.get(node, "process", "ProcessCPUUtilization", "Algorithm")),
        ("Training processes memory", "bytes", sysm.get(node, "process", "ProcessMemoryRSSBytes", "Algorithm")),
    ]
    return {name: {"unit": unit, **_stats(s.v)} for name, unit, s in metrics if len(s)}


@_rule("MaxInitializationTime", "profiler", (Param("threshold", "float", 20.0), SCAN),
       "Detects a slow start: the time from the job's start to its first training step, compared with "
       "threshold (minutes). While no step has run, the rule triggers once the wait exceeds threshold.",
       "Check data download and parsing time; use Pipe/FastFile input or fewer, larger files.", windowed=True)
def max_initialization_time(p: dict[str, Any], data: JobData) -> Check:
    start = data.job_start
    steps = data.events("Step")
    limit = p["threshold"] * 60.0
    if start is None:
        return Check(False, "No profiling data yet.", evaluated=False)
    if steps:
        init = max(steps[0].start - start, 0.0)
        msg = f"The first step started {init / 60:.2f} min after the job started (threshold {p['threshold']} min)."
        return Check(init > limit, msg, int(init > limit), len(steps), step=steps[0].step,
                     details={"initialization_seconds": init, "first_step_time": steps[0].start})
    waited = max(data.now - start, 0.0)
    notes = [] if data.framework else ["No framework metrics: the first step time is unknown."]
    msg = f"No training step yet after {waited / 60:.2f} min (threshold {p['threshold']} min)."
    return Check(waited > limit, msg, int(waited > limit), 0, details={"waited_seconds": waited}, notes=notes,
                 evaluated=waited > limit)


# ------------------------------------------------------------------ profiler rules: framework metrics


@_rule("StepOutlier", "profiler",
       (Param("stddev", "float", 3.0), Param("mode", "str", None), Param("n_outliers", "int", 10), SCAN),
       "Detects steps much slower than the others: durations above mean + stddev standard deviations, per "
       "node, for TRAIN steps (boosting rounds) and EVAL steps (evaluations). It triggers when more than "
       "n_outliers steps are outliers.",
       "Look at what else ran on the instance at the outlier times (system plots), e.g. checkpointing, "
       "evaluation on large sets or competing processes.", windowed=True)
def step_outlier(p: dict[str, Any], data: JobData) -> Check:
    mode = (p["mode"] or "").upper()
    kinds = {"TRAIN": "Step", "EVAL": "Evaluation"}
    chosen = [mode] if mode in kinds else list(kinds)
    details: dict[str, Any] = {}
    outliers = points = 0
    first_step = None
    for m in chosen:
        per_node: dict[str, list[Any]] = {}
        for e in data.events(kinds[m]):
            per_node.setdefault(e.node, []).append(e)
        for node, events in sorted(per_node.items()):
            d = np.array([e.duration for e in events])
            points += len(d)
            if len(d) < 3:
                continue
            mean, std = float(d.mean()), float(d.std())
            limit = mean + p["stddev"] * std
            out = [events[i] for i in np.flatnonzero(d > limit)] if std > 0 else []
            outliers += len(out)
            if out and first_step is None:
                first_step = out[0].step
            details[f"{node}/{m}"] = {**_stats(d), "mean": mean, "std": std, "limit": limit, "outliers": len(out),
                                      "outlier_steps": [e.step for e in out][:50]}
    if points == 0:
        return Check(False, "No step durations recorded (framework metrics are off or no step ran yet).",
                     evaluated=False)
    triggered = outliers > p["n_outliers"]
    msg = (f"{outliers} step(s) took longer than mean + {p['stddev']} standard deviations "
           f"(allowed: {p['n_outliers']}).")
    return Check(triggered, msg, outliers, points, step=first_step if triggered else None, details=details)


@_rule("Dataloader", "profiler",
       (Param("min_threshold", "float", 70.0), Param("max_threshold", "float", 200.0), SCAN),
       "Checks the number of data-loading processes against the number of cores (deep-learning frameworks).",
       "Nothing to do for XGBoost.")
def dataloader(p: dict[str, Any], data: JobData) -> Check:
    note = "Not applicable: XGBoost reads its data once, before training, without data-loader workers."
    return Check(False, note, notes=[note])


@_rule("OverallFrameworkMetrics", "profiler", (SCAN,),
       "Summarises where the training process spent its time: boosting rounds, evaluation, Debugger saves "
       "and the phases reported by the algorithm (data loading, initialization). It never triggers.",
       "If evaluation or Debugger saves take a large share, evaluate less often or save fewer collections.")
def overall_framework_metrics(p: dict[str, Any], data: JobData) -> Check:
    by_name: dict[str, dict[str, Any]] = {}
    for e in data.framework:
        if e.name == "TrainingLoop":
            continue
        entry = by_name.setdefault(e.name, {"phase": e.phase, "count": 0, "total_seconds": 0.0})
        entry["count"] += 1
        entry["total_seconds"] += e.duration
    total = sum(v["total_seconds"] for v in by_name.values())
    for v in by_name.values():
        v["percent"] = 100.0 * v["total_seconds"] / total if total > 0 else 0.0
    msg = (f"{len(data.framework)} framework events; " + ", ".join(
        f"{k} {v['percent']:.0f}%" for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]["total_seconds"]))
        if by_name else "No framework metrics recorded.")
    return Check(False, msg, 0, len(data.framework), details={"events": by_name, "total_seconds": total},
                 evaluated=bool(by_name))


# ------------------------------------------------------------------ Debugger rules: helpers


def _dataset(tensor: str) -> str:
    return tensor.split("-", 1)[0]


def _metric(tensor: str) -> str:
    return tensor.split("-", 1)[1] if "-" in tensor else tensor


def higher_is_better(tensor: str) -> bool:
    return _metric(tensor).split("@", 1)[0] in MAXIMIZE_METRICS


def _is_loss(tensor: str) -> bool:
    base = _metric(tensor).split("@", 1)[0]
    return base not in MAXIMIZE_METRICS and base not in _RATE_METRICS


def _matches(name: str, patterns: list[str] | None) -> bool:
    return not patterns or any(re.match(rx, name) for rx in patterns)


def _check_patterns(patterns: list[str] | None) -> None:
    for rx in patterns or []:
        try:
            re.compile(rx)
        except re.error as exc:
            raise RuleConfigError(f"Invalid regular expression '{rx}': {exc}.") from None


def _loss_tensors(data: JobData, patterns: list[str] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Metric tensors the loss rules look at: the regex's, else losses (error rates and scores excluded)."""
    _check_patterns(patterns)
    metrics = data.debug.metrics
    if patterns:
        return {k: v for k, v in metrics.items() if _matches(k, patterns)}
    losses = {k: v for k, v in metrics.items() if _is_loss(k)}
    return losses or dict(metrics)


def _by_mode(tensors: dict[str, Any], mode: str | None) -> tuple[dict[str, Any], str]:
    mode = (mode or "").upper()
    evals = {k: v for k, v in tensors.items() if _dataset(k) != "train"}
    train = {k: v for k, v in tensors.items() if _dataset(k) == "train"}
    if mode == "EVAL":
        return evals, "EVAL"
    if mode == "TRAIN":
        return train, "TRAIN"
    if mode == "GLOBAL":
        return tensors, "GLOBAL"
    if evals:  # SageMaker's order when no mode is given: EVAL, then TRAIN, then GLOBAL
        return evals, "EVAL"
    return (train, "TRAIN") if train else (tensors, "GLOBAL")


def _improvement_percent(prev: float, cur: float, higher: bool) -> float:
    gain = (cur - prev) if higher else (prev - cur)
    if prev == 0:
        return 0.0 if gain == 0 else math.copysign(math.inf, gain)
    return 100.0 * gain / abs(prev)


def _no_debug_data(data: JobData, what: str) -> Check:
    if not data.debug.present:
        msg = "No Debugger data: the job has no DebugHookConfig or no step was saved yet."
    else:
        msg = f"No {what} saved yet: add the collection to the DebugHookConfig."
    return Check(False, msg, notes=[msg], evaluated=False)


# ------------------------------------------------------------------ Debugger rules


@_rule("LossNotDecreasing", "debug",
       (Param("tensor_regex", "list", None), Param("collection_names", "list", None),
        Param("use_losses_collection", "bool", True), Param("num_steps", "int", 10),
        Param("diff_percent", "float", 0.1), Param("increase_threshold_percent", "float", 5.0),
        Param("mode", "str", None)),
       "Every num_steps steps, compares each loss with its value at a saved step at least num_steps earlier; "
       "triggers when it decreased by less than diff_percent percent. A rise of more than "
       "increase_threshold_percent percent is reported as an increase. Without mode, validation losses are "
       "checked if saved, else training losses.",
       "Raise eta (learning rate), check the data and labels, or stop training: the model no longer improves.")
def loss_not_decreasing(p: dict[str, Any], data: JobData) -> Check:
    tensors, mode = _by_mode(_loss_tensors(data, p["tensor_regex"]), p["mode"])
    if not tensors:
        return _no_debug_data(data, "metrics (losses)")
    n = max(p["num_steps"], 1)
    checks: dict[str, list[dict[str, Any]]] = {}
    bad_steps: list[int] = []
    worst = ""
    for name, (steps, values) in tensors.items():
        higher = higher_is_better(name)
        last_check = int(steps[0])
        for i, s in enumerate(steps):
            if s < last_check + n:
                continue
            ref = int(np.searchsorted(steps[:i], s - n, side="right")) - 1
            pct = _improvement_percent(values[ref], values[i], higher)
            ok = pct >= p["diff_percent"]
            kind = "ok" if ok else ("increasing" if -pct > p["increase_threshold_percent"] else "stalled")
            checks.setdefault(name, []).append({"step": int(s), "compared_to": int(steps[ref]),
                                                "value": float(values[i]), "previous": float(values[ref]),
                                                "decrease_percent": pct, "result": kind})
            if not ok:
                bad_steps.append(int(s))
                worst = worst or (f"{name} went from {values[ref]:.6g} (step {steps[ref]}) to {values[i]:.6g} "
                                  f"(step {s}): {pct:+.3f}% improvement, below {p['diff_percent']}%.")
            last_check = int(s)
    n_checks = sum(len(c) for c in checks.values())
    details = {"mode": mode, "tensors": sorted(tensors), "checks": checks}
    if n_checks == 0:
        msg = f"Not enough saved steps yet: need {mode} losses at least {n} steps apart."
        return Check(False, msg, details=details, evaluated=False)
    if bad_steps:
        return Check(True, f"Loss not decreasing: {worst}", len(bad_steps), n_checks, step=min(bad_steps),
                     details=details, triggers=len(set(bad_steps)))
    msg = f"{', '.join(sorted(tensors))} decreased by at least {p['diff_percent']}% every {n} steps " \
          f"({n_checks} checks)."
    return Check(False, msg, 0, n_checks, details=details)


def _train_eval_pairs(data: JobData, patterns: list[str] | None) -> list[tuple[str, str]]:
    tensors = _loss_tensors(data, patterns)
    pairs = []
    for name in tensors:
        if _dataset(name) == "train":
            continue
        train = f"train-{_metric(name)}"
        if train in data.debug.metrics:
            pairs.append((train, name))
    return sorted(pairs)


@_rule("Overfit", "debug",
       (Param("tensor_regex", "list", None), Param("start_step", "int", 0), Param("patience", "int", 1),
        Param("ratio_threshold", "float", 0.1)),
       "Compares validation and training loss at each saved step from start_step: triggers when "
       "(validation - training) / training exceeds ratio_threshold for patience consecutive saved steps.",
       "Regularize: lower max_depth or eta, raise min_child_weight, gamma, lambda or alpha, subsample rows "
       "and columns, or stop earlier (early_stopping_rounds).")
def overfit(p: dict[str, Any], data: JobData) -> Check:
    pairs = _train_eval_pairs(data, p["tensor_regex"])
    if not pairs:
        return _no_debug_data(data, "training and validation metrics of the same loss")
    metrics = data.debug.metrics
    series: dict[str, list[dict[str, Any]]] = {}
    hit_steps: list[int] = []
    worst = (0.0, "")
    points = 0
    for train_name, eval_name in pairs:
        (ts, tv), (es, ev) = metrics[train_name], metrics[eval_name]
        common, ti, ei = np.intersect1d(ts, es, return_indices=True)
        run = 0
        higher = higher_is_better(eval_name)
        for s, a, b in zip(common, tv[ti], ev[ei], strict=True):
            if s < p["start_step"]:
                continue
            points += 1
            gap = (a - b) if higher else (b - a)
            ratio = gap / abs(a) if a != 0 else (math.inf if gap > 0 else 0.0)
            run = run + 1 if ratio > p["ratio_threshold"] else 0
            series.setdefault(eval_name, []).append({"step": int(s), "train": float(a), "eval": float(b),
                                                     "ratio": ratio})
            if run >= p["patience"]:
                hit_steps.append(int(s))
                if ratio > worst[0]:
                    worst = (ratio, f"at step {s}, {eval_name} = {b:.6g} vs {train_name} = {a:.6g} "
                                    f"(ratio {ratio:.3f} > {p['ratio_threshold']})")
    details = {"pairs": [list(pr) for pr in pairs], "ratios": series}
    if points == 0:
        return Check(False, f"No saved step at or after start_step {p['start_step']} yet.", details=details,
                     evaluated=False)
    if hit_steps:
        return Check(True, f"Overfitting: {worst[1]}.", len(hit_steps), points, step=min(hit_steps),
                     details=details, triggers=len(set(hit_steps)))
    top = max((r["ratio"] for rs in series.values() for r in rs), default=0.0)
    msg = f"Validation loss stayed within {p['ratio_threshold']:.0%} of training loss (max ratio {top:.3f})."
    return Check(False, msg, 0, points, details=details)


@_rule("Overtraining", "debug",
       (Param("patience_train", "int", 5), Param("patience_validation", "int", 10),
        Param("delta", "float", 0.01)),
       "Triggers when the training loss has not improved by at least delta for patience_train saved steps, "
       "or the validation loss for patience_validation saved steps.",
       "Use early stopping (early_stopping_rounds) or fewer rounds; the model stopped improving.")
def overtraining(p: dict[str, Any], data: JobData) -> Check:
    tensors = _loss_tensors(data, None)
    if not tensors:
        return _no_debug_data(data, "metrics (losses)")
    hits: list[int] = []
    first_msg = ""
    summary: dict[str, Any] = {}
    points = 0
    for name, (steps, values) in tensors.items():
        patience = p["patience_train"] if _dataset(name) == "train" else p["patience_validation"]
        higher = higher_is_better(name)
        best, best_step, since = values[0], int(steps[0]), 0
        for s, v in zip(steps[1:], values[1:], strict=True):
            points += 1
            better = v > best + p["delta"] if higher else v < best - p["delta"]
            if better:
                best, best_step, since = v, int(s), 0
                continue
            since += 1
            if since >= patience:
                hits.append(int(s))
                first_msg = first_msg or (f"{name} has not improved by {p['delta']} since step {best_step} "
                                          f"(best {best:.6g}) for {since} saved steps (patience {patience}).")
        summary[name] = {"best": float(best), "best_step": best_step, "saved_steps_since_best": since,
                         "patience": patience}
    details = {"tensors": summary}
    if points == 0:
        return Check(False, "Need at least two saved steps of the losses.", details=details, evaluated=False)
    if hits:
        return Check(True, f"Overtraining: {first_msg}", len(hits), points, step=min(hits), details=details,
                     triggers=len(set(hits)))
    return Check(False, f"Losses kept improving by more than {p['delta']} within their patience.", 0, points,
                 details=details)


def predicted_classes(pred: np.ndarray, objective: str, labels: np.ndarray | None = None,
                      argmax: bool = False) -> np.ndarray | None:
    """Class predictions from model output; ``None`` when the task is not classification."""
    if pred.ndim == 2:
        return np.argmax(pred, axis=1)
    obj = objective or ""
    if obj.startswith("multi:softmax") or (argmax and obj.startswith("multi:")):
        return np.rint(pred).astype(np.int64)
    if obj.startswith("binary:logitraw"):
        return (pred > 0).astype(np.int64)
    binary_labels = labels is not None and np.isin(labels, (0, 1)).all()
    if obj.startswith("binary:") or (obj in ("", "reg:logistic") and binary_labels
                                     and pred.min() >= 0 and pred.max() <= 1):
        return (pred > 0.5).astype(np.int64)
    return None


def _last_predictions(data: JobData, argmax: bool = False) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | Check:
    """(step, labels, raw predictions, class predictions) at the last saved step, or why not."""
    labels = data.debug.labels
    steps = data.debug.steps("predictions")
    if labels is None or not steps:
        return _no_debug_data(data, "labels and predictions")
    pred = data.debug.predictions(steps[-1])
    if pred is None or len(pred) != len(labels):
        return Check(False, "Predictions and labels do not match in length.", evaluated=False)
    classes = predicted_classes(pred, data.debug.objective, labels, argmax)
    if classes is None:
        msg = f"Not a classification task (objective {data.debug.objective or 'unknown'}): rule not applicable."
        return Check(False, msg, notes=[msg])
    return steps[-1], labels.astype(np.int64), pred, classes


@_rule("ClassImbalance", "debug",
       (Param("threshold_imbalance", "float", 10.0), Param("threshold_misprediction", "float", 0.7),
        Param("samples", "int", 500), Param("argmax", "bool", False), Param("labels_regex", "str", ".*labels"),
        Param("predictions_regex", "str", ".*predictions")),
       "Counts the samples of each class in the labels: triggers when the largest class has more than "
       "threshold_imbalance times the samples of the smallest, or when a class's share of mispredicted "
       "samples exceeds threshold_misprediction (predictions at the last saved step).",
       "Rebalance: set scale_pos_weight (binary) or sample weights, resample the data, or collect more "
       "samples of the rare classes.")
def class_imbalance(p: dict[str, Any], data: JobData) -> Check:
    _check_patterns([p["labels_regex"] or "", p["predictions_regex"] or ""])
    if not re.match(p["labels_regex"] or ".*", "labels") or not re.match(p["predictions_regex"] or ".*",
                                                                           "predictions"):
        return Check(False, "labels_regex / predictions_regex match no saved tensor.", evaluated=False)
    got = _last_predictions(data, p["argmax"])
    if isinstance(got, Check):
        return got
    step, labels, _, classes = got
    if len(labels) < p["samples"]:
        return Check(False, f"Only {len(labels)} labelled samples, fewer than samples={p['samples']}.",
                     datapoints=len(labels), evaluated=False)
    values, counts = np.unique(labels, return_counts=True)
    ratio = float(counts.max() / counts.min())
    per_class = {}
    bad = []
    for c, n in zip(values, counts, strict=True):
        miss = float(np.mean(classes[labels == c] != c))
        per_class[str(int(c))] = {"count": int(n), "misprediction": miss}
        if miss > p["threshold_misprediction"]:
            bad.append(f"class {int(c)} {miss:.0%} mispredicted")
    imbalanced = ratio > p["threshold_imbalance"]
    problems = ([f"largest/smallest class ratio {ratio:.1f} > {p['threshold_imbalance']}"] if imbalanced
                else []) + bad
    details = {"step": step, "ratio": ratio, "classes": per_class}
    if problems:
        return Check(True, "Class imbalance: " + "; ".join(problems) + ".", len(problems), len(labels), step=step,
                     details=details)
    return Check(False, f"Classes balanced enough (ratio {ratio:.1f}) and no class mispredicted above "
                        f"{p['threshold_misprediction']:.0%}.", 0, len(labels), details=details)


def confusion_matrix(labels: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
    """``m[label][prediction]`` counts."""
    m = np.zeros((n, n), dtype=np.int64)
    ok = (labels >= 0) & (labels < n) & (classes >= 0) & (classes < n)
    np.add.at(m, (labels[ok], classes[ok]), 1)
    return m


@_rule("Confusion", "debug",
       (Param("category_no", "int", None), Param("labels", "str", "labels"), Param("predictions", "str",
        "predictions"), Param("labels_collection", "str", "labels"),
        Param("predictions_collection", "str", "predictions"), Param("min_diag", "float", 0.9),
        Param("max_off_diag", "float", 0.1)),
       "Builds the confusion matrix confusion[label][prediction] at the last saved step. For each predicted "
       "class (column) with predictions, the diagonal share must be at least min_diag and each off-diagonal "
       "share at most max_off_diag. (AWS's formula divides the diagonal by the sum of the diagonal, which "
       "cannot reach 0.9 with two balanced classes; sagestack normalises by the column as for off-diagonal "
       "cells.)",
       "Look at the classes that are confused with each other: more or better features, more samples of "
       "those classes, or class weights.")
def confusion(p: dict[str, Any], data: JobData) -> Check:
    got = _last_predictions(data)
    if isinstance(got, Check):
        return got
    step, labels, _, classes = got
    n = p["category_no"] or int(max(labels.max(initial=0), classes.max(initial=0)) + 1)
    if n < 2:
        raise RuleConfigError("category_no must be at least 2.")
    m = confusion_matrix(labels, classes, n)
    cols = m.sum(axis=0)
    problems = []
    for i in range(n):
        if cols[i] == 0:
            continue
        share = m[:, i] / cols[i]
        if share[i] < p["min_diag"]:
            problems.append(f"predicted class {i}: {share[i]:.0%} correct < {p['min_diag']:.0%}")
        problems += [f"class {j} predicted as {i}: {share[j]:.0%} > {p['max_off_diag']:.0%}"
                     for j in range(n) if j != i and share[j] > p["max_off_diag"]]
    details = {"step": step, "matrix": m.tolist(), "category_no": n}
    if problems:
        return Check(True, "Confusion: " + "; ".join(problems[:6]) + ("." if len(problems) <= 6 else " ..."),
                     len(problems), int(m.sum()), step=step, details=details)
    return Check(False, f"Confusion matrix within limits (diagonal >= {p['min_diag']:.0%}, off-diagonal <= "
                        f"{p['max_off_diag']:.0%}).", 0, int(m.sum()), details=details)


@_rule("FeatureImportanceOverweight", "debug",
       (Param("threshold", "float", 0.8), Param("nfeatures", "int", 3),
        Param("tensor_regex", "str", ".*feature_importance/weight")),
       "At each saved step, sums the normalised importance of the nfeatures most important features "
       "(importance types selected by tensor_regex, weight by default) and triggers when it exceeds "
       "threshold.",
       "A few features dominate the model: check them for target leakage, and consider colsample_bytree "
       "or more informative features.")
def feature_importance_overweight(p: dict[str, Any], data: JobData) -> Check:
    _check_patterns([p["tensor_regex"] or ""])
    steps = data.debug.steps("feature_importance")
    if not steps:
        return _no_debug_data(data, "feature importance")
    rx = p["tensor_regex"] or ".*feature_importance/weight"
    per_step: dict[str, dict[str, Any]] = {}
    hits = []
    msg = ""
    for s in steps:
        for kind, scores in data.debug.feature_importance(s).items():
            if not re.match(rx, f"feature_importance/{kind}/x"):
                continue
            top = sorted(scores.items(), key=lambda kv: -kv[1])[: p["nfeatures"]]
            share = float(sum(v for _, v in top))
            per_step.setdefault(str(s), {})[kind] = {"top": top, "share": share}
            if share > p["threshold"]:
                hits.append(s)
                msg = msg or (f"at step {s}, the top {len(top)} features ({', '.join(f for f, _ in top)}) hold "
                              f"{share:.0%} of the {kind} importance (threshold {p['threshold']:.0%}).")
    details = {"steps": per_step}
    if not per_step:
        return Check(False, f"No saved importance type matches '{rx}'.", details=details, evaluated=False)
    if hits:
        return Check(True, f"Feature importance overweight: {msg}", len(hits), len(per_step), step=min(hits),
                     details=details, triggers=len(set(hits)))
    return Check(False, f"The top {p['nfeatures']} features never held more than {p['threshold']:.0%} of the "
                        f"importance.", 0, len(per_step), details=details)


def tree_depth_of(tree: dict[str, Any]) -> tuple[int, int]:
    """(depth, largest node id) of one tree of xgboost's JSON dump; a single leaf has depth 0."""
    depth, largest = 0, 0
    stack = [(tree, 0)]
    while stack:
        node, d = stack.pop()
        largest = max(largest, int(node.get("nodeid", 0)))
        children = node.get("children") or []
        if children:
            depth = max(depth, d + 1)
            stack.extend((c, d + 1) for c in children)
    return depth, largest


@_rule("TreeDepth", "debug", (Param("depth", "float", 4.0),),
       "Measures the depth of the trees at each saved step and triggers when the deepest tree is deeper "
       "than depth. (AWS estimates depth as log2 of the largest node id and does not say which side "
       "triggers; sagestack measures the depth exactly and treats deeper trees as the issue.)",
       "Deep trees fit noise: lower max_depth, or raise gamma / min_child_weight so XGBoost rejects more "
       "splits.")
def tree_depth(p: dict[str, Any], data: JobData) -> Check:
    steps = data.debug.steps("trees")
    if not steps:
        return _no_debug_data(data, "trees")
    per_step, hits = {}, []
    deepest, largest, count = 0, 0, 0
    for s in steps:
        for tree in data.debug.trees_at(s):
            d, n = tree_depth_of(tree)
            deepest, largest, count = max(deepest, d), max(largest, n), count + 1
        per_step[str(s)] = {"max_depth": deepest, "log2_largest_node_id": math.log2(largest) if largest else 0.0,
                            "trees": count}
        if deepest > p["depth"]:
            hits.append(s)
    details = {"steps": per_step}
    if hits:
        return Check(True, f"Trees of depth {deepest} (threshold {p['depth']:g}).", len(hits), len(steps),
                     step=min(hits), details=details, triggers=len(hits))
    return Check(False, f"The deepest of {count} trees has depth {deepest} (threshold {p['depth']:g}).", 0,
                 len(steps), details=details)


# ------------------------------------------------------------------ report rules (the runner writes them)


def _report_rule(name: str, description: str) -> None:
    def fn(p: dict[str, Any], data: JobData) -> Check:
        return Check(False, f"{name} report generated.")
    RULES[name] = RuleSpec(name, "report", (), description, "Open the HTML report.", fn)


_report_rule("CreateXgboostReport", "Builds the XGBoost training report (xgboost_report.html) from the Debugger "
             "collections: label distribution, loss per round, feature importance, confusion matrix, ROC, "
             "residuals.")
_report_rule("ProfilerReport", "Runs every profiler rule and builds the profiler report (profiler-report.html).")


def split_profiler_report_params(params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"CPUBottleneck_threshold": "70"}`` -> ``{"CPUBottleneck": {"threshold": "70"}}``."""
    out: dict[str, dict[str, Any]] = {name: {} for name in PROFILER_REPORT_RULES}
    for key, value in (params or {}).items():
        rule, sep, param = key.partition("_")
        if sep and rule in out:
            out[rule][param] = value
    return out
