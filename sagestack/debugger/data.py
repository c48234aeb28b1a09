"""Readers for the local data rules and reports work on.

Three sources, each optional (see :mod:`.profiler` and :mod:`.hook` for the formats):

* system metrics: ``<profiler-output>/system/incremental/*/*.json``
* framework events: ``<profiler-output>/framework/events/*.jsonl``
* debug collections: ``<debug-output>/``

Rules run periodically while a job trains, so reading must be cheap and
tolerant: parsed system-metric files are cached by (path, size, mtime) because
they never change once written, a half-written last line is skipped, and a
debug step is visible only once ``index.jsonl`` lists it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Key = tuple[str, str, str, str]  # (NodeId, Type, Name, Dimension)


@dataclass(frozen=True)
class Series:
    """Values over time, sorted by time (UNIX seconds)."""

    t: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    def until(self, cutoff: float) -> Series:
        n = int(np.searchsorted(self.t, cutoff, side="right"))
        return Series(self.t[:n], self.v[:n])


def _empty() -> Series:
    return Series(np.zeros(0), np.zeros(0))


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:  # a line still being written, or garbage: skip it
            continue
        if isinstance(obj, dict):
            yield obj


# ------------------------------------------------------------------ system metrics

_FILE_CACHE: OrderedDict[tuple[str, int, int], dict[Key, tuple[np.ndarray, np.ndarray]]] = OrderedDict()
_FILE_CACHE_MAX = 4000  # files, i.e. minutes of one node (a few KB of arrays each)


def _parse_system_file(path: Path) -> dict[Key, tuple[np.ndarray, np.ndarray]]:
    try:
        st = path.stat()
    except OSError:
        return {}
    ck = (str(path), st.st_size, st.st_mtime_ns)
    if ck in _FILE_CACHE:
        _FILE_CACHE.move_to_end(ck)
        return _FILE_CACHE[ck]
    lists: dict[Key, tuple[list[float], list[float]]] = {}
    for rec in _read_lines(path):
        try:
            key = (str(rec.get("NodeId", "algo-1")), str(rec["Type"]), str(rec.get("Name") or ""),
                   str(rec.get("Dimension") or ""))
            t, v = float(rec["Timestamp"]), float(rec["Value"])
        except (KeyError, TypeError, ValueError):
            continue
        ts, vs = lists.setdefault(key, ([], []))
        ts.append(t)
        vs.append(v)
    # Arrays, not lists: a cached minute then costs 16 bytes per record.
    out = {k: (np.asarray(ts, dtype=np.float64), np.asarray(vs, dtype=np.float64)) for k, (ts, vs) in lists.items()}
    _FILE_CACHE[ck] = out
    while len(_FILE_CACHE) > _FILE_CACHE_MAX:
        _FILE_CACHE.popitem(last=False)
    return out


class SystemMetrics:
    """All system-metric series of a job, by (node, type, name, dimension)."""

    def __init__(self, series: dict[Key, Series]) -> None:
        self.series = series

    @classmethod
    def read(cls, profiler_dir: Path | None) -> SystemMetrics:
        if profiler_dir is None:
            return cls({})
        root = Path(profiler_dir) / "system" / "incremental"
        merged: dict[Key, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
            if path.name.startswith("."):
                continue
            for key, (ts, vs) in _parse_system_file(path).items():
                mt, mv = merged.setdefault(key, ([], []))
                mt.append(ts)
                mv.append(vs)
        series = {}
        for key, (ts, vs) in merged.items():
            t, v = np.concatenate(ts), np.concatenate(vs)
            order = np.argsort(t, kind="stable")
            series[key] = Series(t[order], v[order])
        return cls(series)

    def until(self, cutoff: float) -> SystemMetrics:
        return SystemMetrics({k: s.until(cutoff) for k, s in self.series.items()})

    @cached_property
    def nodes(self) -> list[str]:
        return sorted({k[0] for k in self.series})

    def get(self, node: str, type_: str, name: str, dimension: str = "") -> Series:
        return self.series.get((node, type_, name, dimension), _empty())

    def by_dimension(self, node: str, dimension: str) -> dict[str, Series]:
        """Series of one dimension keyed by name, e.g. ``CPUUtilization`` -> {cpu0: ..., cpu1: ...}."""
        found = {k[2]: s for k, s in self.series.items() if k[0] == node and k[3] == dimension and len(s)}
        return dict(sorted(found.items(), key=lambda kv: _natural(kv[0])))

    def mean_of(self, node: str, dimension: str) -> Series:
        """Mean over names (cores, GPUs) of a dimension at each timestamp."""
        return _aligned_mean(list(self.by_dimension(node, dimension).values()))

    def cpu_total(self, node: str) -> Series:
        return self.mean_of(node, "CPUUtilization")

    def gpus(self, node: str) -> dict[str, Series]:
        return self.by_dimension(node, "GPUUtilization")

    @property
    def has_gpu(self) -> bool:
        return any(k[3] == "GPUUtilization" and len(s) for k, s in self.series.items())

    def timestamps(self, node: str | None = None) -> np.ndarray:
        arrays = [s.t for k, s in self.series.items() if node is None or k[0] == node]
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0)

    @cached_property
    def span(self) -> tuple[float, float] | None:
        firsts = [s.t[0] for s in self.series.values() if len(s)]
        lasts = [s.t[-1] for s in self.series.values() if len(s)]
        return (min(firsts), max(lasts)) if firsts else None


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return head, int(tail) if tail else -1


def _aligned_mean(series: list[Series]) -> Series:
    if not series:
        return _empty()
    t = np.concatenate([s.t for s in series])
    v = np.concatenate([s.v for s in series])
    uniq, inverse = np.unique(t, return_inverse=True)
    sums = np.bincount(inverse, weights=v, minlength=len(uniq))
    counts = np.bincount(inverse, minlength=len(uniq))
    return Series(uniq, sums / np.maximum(counts, 1))


# ------------------------------------------------------------------ framework events


@dataclass(frozen=True)
class FrameworkEvent:
    name: str
    phase: str
    step: int | None
    start: float
    end: float
    node: str
    pid: int | None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def duration(self) -> float:
        return self.end - self.start


def read_framework_events(profiler_dir: Path | None) -> list[FrameworkEvent]:
    if profiler_dir is None:
        return []
    root = Path(profiler_dir) / "framework" / "events"
    events = []
    for path in sorted(root.glob("*.jsonl")) if root.is_dir() else []:
        for rec in _read_lines(path):
            try:
                events.append(FrameworkEvent(
                    name=str(rec["Name"]), phase=str(rec.get("Phase", "OTHER")),
                    step=None if rec.get("Step") is None else int(rec["Step"]),
                    start=float(rec["StartTime"]), end=float(rec["EndTime"]),
                    node=str(rec.get("NodeId", "algo-1")), pid=rec.get("Pid"),
                    extra={k: v for k, v in rec.items() if k not in _EVENT_KEYS},
                ))
            except (KeyError, TypeError, ValueError):
                continue
    events.sort(key=lambda e: e.start)
    return events


_EVENT_KEYS = {"Name", "Phase", "Step", "StartTime", "EndTime", "Duration", "NodeId", "Pid"}


# ------------------------------------------------------------------ debug collections


class DebugData:
    """The collections the hook saved, as far as ``index.jsonl`` says they are complete."""

    def __init__(self, debug_dir: Path | None) -> None:
        self.dir = None if debug_dir is None else Path(debug_dir)

    def _json(self, rel: str) -> Any:
        if self.dir is None:
            return None
        try:
            return json.loads((self.dir / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @cached_property
    def present(self) -> bool:
        return self.dir is not None and (self.dir / "index.jsonl").is_file()

    @cached_property
    def meta(self) -> dict[str, Any]:
        return self._json("meta.json") or {}

    @cached_property
    def index(self) -> dict[int, set[str]]:
        steps: dict[int, set[str]] = {}
        if self.dir is None:
            return steps
        for rec in _read_lines(self.dir / "index.jsonl"):
            try:
                steps.setdefault(int(rec["step"]), set()).update(rec.get("collections") or [])
            except (KeyError, TypeError, ValueError):
                continue
        return dict(sorted(steps.items()))

    def steps(self, collection: str) -> list[int]:
        return [s for s, cols in self.index.items() if collection in cols]

    @cached_property
    def metrics(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Metric tensors (``validation-rmse``...) -> (steps, values), for indexed steps only."""
        listed = set(self.steps("metrics"))
        found: dict[str, dict[int, float]] = {}
        if self.dir is not None:
            for rec in _read_lines(self.dir / "metrics.jsonl"):
                step = rec.get("step")
                if step not in listed:
                    continue
                for name, value in (rec.get("values") or {}).items():
                    found.setdefault(name, {})[int(step)] = float(value)
        out = {}
        for name, by_step in sorted(found.items()):
            steps = np.array(sorted(by_step), dtype=np.int64)
            out[name] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
        return out

    @cached_property
    def hyperparameters(self) -> dict[str, str]:
        return (self._json("hyperparameters.json") or {}).get("values") or {}

    @property
    def objective(self) -> str:
        return str(self.meta.get("objective") or self.hyperparameters.get("objective") or "")

    def feature_importance(self, step: int) -> dict[str, dict[str, float]]:
        return (self._json(f"feature_importance/step-{step:06d}.json") or {}).get("types") or {}

    def _npz(self, rel: str, key: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        try:
            with np.load(self.dir / rel, allow_pickle=False) as z:
                return np.asarray(z[key])
        except (OSError, KeyError, ValueError):
            return None

    def predictions(self, step: int) -> np.ndarray | None:
        return self._npz(f"predictions/step-{step:06d}.npz", "predictions")

    @cached_property
    def labels(self) -> np.ndarray | None:
        return self._npz("labels/labels.npz", "labels") if self.steps("labels") else None

    def trees_at(self, step: int) -> list[dict[str, Any]]:
        """Trees added since the previous trees save (xgboost JSON dump of each)."""
        return (self._json(f"trees/step-{step:06d}.json") or {}).get("trees") or []

    def trees_until(self, step: int) -> list[dict[str, Any]]:
        trees: list[dict[str, Any]] = []
        for s in self.steps("trees"):
            if s > step:
                break
            trees.extend(self.trees_at(s))
        return trees

    def average_shap(self, step: int) -> dict[str, Any]:
        return self._json(f"average_shap/step-{step:06d}.json") or {}


# ------------------------------------------------------------------ job data


@dataclass(frozen=True)
class JobPaths:
    """The local directories of one job, mirroring its S3 prefixes."""

    profiler_output: Path
    debug_output: Path
    rule_output: Path

    @classmethod
    def under(cls, job_dir: Path | str) -> JobPaths:
        job_dir = Path(job_dir)
        return cls(job_dir / "profiler-output", job_dir / "debug-output", job_dir / "rule-output")


class JobData:
    """What rules and reports read: system metrics, framework events and debug collections.

    ``job_start``/``job_end`` (UNIX seconds) come from the platform when it knows
    them; otherwise they are taken from the data. ``cutoff`` restricts the view
    to data up to a time (used to replay rules scan interval by scan interval).
    """

    def __init__(self, paths: JobPaths | Path | str, *, job_name: str | None = None,
                 job_start: float | None = None, job_end: float | None = None, now: float | None = None) -> None:
        self.paths = paths if isinstance(paths, JobPaths) else JobPaths.under(paths)
        self.job_name = job_name
        self._job_start = job_start
        self._job_end = job_end
        self.now = time.time() if now is None else now
        self._system: SystemMetrics | None = None
        self._framework: list[FrameworkEvent] | None = None
        self._by_name: dict[str, list[FrameworkEvent]] | None = None
        self.cutoff: float | None = None

    def until(self, cutoff: float) -> JobData:
        view = JobData(self.paths, job_name=self.job_name, job_start=self._job_start,
                       job_end=self._job_end, now=min(self.now, cutoff))
        view._system = self.system.until(cutoff)
        view._framework = [e for e in self.framework if e.end <= cutoff]
        view.__dict__["debug"] = self.debug
        view.cutoff = cutoff
        return view

    @property
    def system(self) -> SystemMetrics:
        if self._system is None:
            self._system = SystemMetrics.read(self.paths.profiler_output)
        return self._system

    @property
    def framework(self) -> list[FrameworkEvent]:
        if self._framework is None:
            self._framework = read_framework_events(self.paths.profiler_output)
        return self._framework

    @cached_property
    def debug(self) -> DebugData:
        return DebugData(self.paths.debug_output)

    def events(self, name: str) -> list[FrameworkEvent]:
        """Framework events of one name, in start order (grouped once: rules ask many times)."""
        if self._by_name is None:
            grouped: dict[str, list[FrameworkEvent]] = {}
            for e in self.framework:
                grouped.setdefault(e.name, []).append(e)
            self._by_name = grouped
        return self._by_name.get(name, [])

    @property
    def job_start(self) -> float | None:
        if self._job_start is not None:
            return self._job_start
        candidates = [e.start for e in self.framework[:1]]
        if self.system.span:
            candidates.append(self.system.span[0])
        return min(candidates) if candidates else None

    @property
    def job_end(self) -> float | None:
        if self._job_end is not None:
            return self._job_end
        candidates = [max(e.end for e in self.framework)] if self.framework else []
        if self.system.span:
            candidates.append(self.system.span[1])
        return max(candidates) if candidates else None

    def training_summary(self) -> dict[str, Any]:
        """The job's phases: initialization, training loop, finalization (seconds and percent)."""
        start, end = self.job_start, self.job_end
        loops = self.events("TrainingLoop")
        steps = self.events("Step")
        loop_start = loops[0].start if loops else (steps[0].start if steps else None)
        loop_end = loops[-1].end if loops else (steps[-1].end if steps else None)
        out: dict[str, Any] = {"start_time": start, "end_time": end, "training_loop_start": loop_start,
                               "training_loop_end": loop_end}
        if start is None or end is None:
            return out
        duration = max(end - start, 0.0)
        out["job_duration_in_seconds"] = duration
        if loop_start is None or loop_end is None:
            return out
        parts = {"initialization": max(loop_start - start, 0.0),
                 "training_loop": max(loop_end - loop_start, 0.0),
                 "finalization": max(end - loop_end, 0.0)}
        for name, secs in parts.items():
            out[f"{name}_in_seconds"] = secs
            out[f"{name}_percent"] = 100.0 * secs / duration if duration > 0 else 0.0
        out["training_loop_duration_in_seconds"] = parts["training_loop"]
        return out
