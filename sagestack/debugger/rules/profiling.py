"""SageMaker's profiler rules (the ProfilerReport's sub-rules): system metrics, then framework metrics.

Parameters and defaults are the values the SDK's rule configurations ship
with. GPU rules are declared ``needs_gpu``: the engine answers them "not
applicable" when the job recorded no GPU metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from sagestack.debugger.data import JobData, Series
from sagestack.debugger.rules.engine import SCAN, Check, Param, Registry, after, registrar, stats

RULES: Registry = {}
_rule = registrar(RULES)


def _gpu_values(data: JobData, dimension: str, patience: int) -> Iterator[tuple[str, np.ndarray]]:
    """Each GPU ("node/name") with its values of ``dimension`` after the first ``patience`` datapoints."""
    for node in data.system.nodes:
        for name, s in data.system.by_dimension(node, dimension).items():
            yield f"{node}/{name}", after(s, patience).v


def _flagged_check(flagged: list[str], points: int, lead: str, all_clear: str, details: dict[str, Any]) -> Check:
    """The verdict of a rule that lists what it flagged: it triggers on any, one violation each,
    and it is evaluated once it has seen a datapoint."""
    msg = (lead + ", ".join(flagged)) if flagged else all_clear
    return Check(bool(flagged), msg, len(flagged), points, details=details, evaluated=points > 0)


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
    for gpu, values in _gpu_values(data, "GPUUtilization", p["patience"]):
        v = values[-p["window"]:]
        if len(v) == 0:
            continue
        points += len(v)
        p95, p5 = np.percentile(v, [95, 5])
        kind = "underutilized" if p95 < p["threshold_p95"] else (
            "fluctuating" if p5 < p["threshold_p5"] else "")
        gpus[gpu] = {"p95": float(p95), "p5": float(p5), "issue": kind}
        if kind:
            flagged.append(f"{gpu} {kind}")
    return _flagged_check(flagged, points, "GPUs with low or fluctuating utilization: ", "All GPUs well utilized.",
                          {"gpus": gpus})


@_rule("GPUMemoryIncrease", "profiler",
       (Param("increase", "float", 5.0), Param("patience", "int", 1000), Param("window", "int", 10), SCAN),
       "Detects large increases of GPU memory use: the moving average over window datapoints rising by more "
       "than increase percentage points from one window to the next.",
       "Look for tensors kept alive across steps (e.g. accumulated losses) or choose a GPU with more memory.",
       windowed=True, needs_gpu=True)
def gpu_memory_increase(p: dict[str, Any], data: JobData) -> Check:
    flagged, points, gpus = [], 0, {}
    w = max(p["window"], 1)
    for gpu, v in _gpu_values(data, "GPUMemoryUtilization", p["patience"]):
        n = len(v) // w
        points += len(v)  # too few for two windows still counts as seen
        if n < 2:
            continue
        means = v[: n * w].reshape(n, w).mean(axis=1)
        jump = float(np.max(np.diff(means)))
        gpus[gpu] = {"max_increase": jump}
        if jump > p["increase"]:
            flagged.append(f"{gpu} +{jump:.1f} points")
    return _flagged_check(flagged, points, "GPU memory grew fast on ", "No large GPU memory increase.",
                          {"gpus": gpus})


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
        tails = {k: after(s, p["patience"]).v[-p["window"]:] for k, s in parts.items()}
        if any(len(v) == 0 for v in tails.values()):
            continue
        points += len(tails["cpu"])
        p95 = {k: float(np.percentile(v, 95)) for k, v in tails.items()}
        nodes[node] = p95
        if (p95["cpu"] < p["cpu_threshold_p95"] and p95["gpu"] < p["gpu_threshold_p95"]
                and p95["gpu_memory"] < p["gpu_memory_threshold_p95"]):
            flagged.append(node)
    return _flagged_check(flagged, points, "Low CPU, GPU and GPU memory use on ",
                          "Resources are used enough for the batch size.", {"nodes": nodes})


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
            v = after(s, p["patience"]).v
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
    # Only pairs can be flagged: without any, nothing is.
    all_clear = "GPU workloads are balanced." if pairs else "Fewer than two GPUs per node: nothing to balance."
    return _flagged_check(flagged, points, "Unbalanced GPUs: ", all_clear, {"pairs": pairs})


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
    return {name: {"unit": unit, **stats(s.v)} for name, unit, s in metrics if len(s)}


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
            details[f"{node}/{m}"] = {**stats(d), "mean": mean, "std": std, "limit": limit, "outliers": len(out),
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
    return Check(False, note, notes=[note], applicable=False)


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

