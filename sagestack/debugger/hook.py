"""Framework metrics and Debugger collections, collected inside the training process.

``train.py`` adds the callbacks of :func:`make_callbacks` to ``xgboost.train``
(first in the list, see below) and reports its own phases with
:func:`record_phase`. Everything is written under ``out_root``, which the
platform uploads: ``profiler-output/`` to ``<ProfilerConfig.S3OutputPath>/<job>/``
and ``debug-output/`` to ``<DebugHookConfig.S3OutputPath>/<job>/``.

Framework metrics
-----------------
``<out_root>/profiler-output/framework/events/<host>-<pid>.jsonl``, one JSON
object per line, appended as they happen and flushed at least once a second::

    {"Name":"Step","Phase":"TRAIN","Step":3,"StartTime":1718000000.12,"EndTime":1718000000.15,
     "Duration":0.03,"NodeId":"algo-1","Pid":4242}

``StartTime``/``EndTime`` are UNIX seconds, ``Duration`` seconds, ``Step`` the
boosting round (``null`` for phases outside the loop); other keys may follow.

=================  =========  ==================================================
Name               Phase      What
=================  =========  ==================================================
Step               TRAIN      one boosting round's ``Booster.update``
Evaluation         EVAL       the evaluation of the round's eval sets
DebugSave          DEBUG      writing the Debugger collections of a save step
TrainingLoop       LOOP       ``before_training`` to ``after_training``
(record_phase)     SETUP ...  phases ``train.py`` reports, e.g. DataLoading,
                              Initialization (SETUP), ModelSave (FINALIZE)
=================  =========  ==================================================

``Step`` and ``Evaluation`` are told apart by timing ``Booster.update``: the
timer wraps the booster's ``update`` for the duration of training (xgboost
evaluates between ``update`` and the callbacks' ``after_iteration``). Put the
callbacks first in ``xgboost.train(callbacks=...)`` so that other callbacks'
work is not counted as evaluation time.

Debug collections
-----------------
``DebugHookConfig`` is read like SageMaker's XGBoost hook: ``HookParameters``
give the default save config (``save_interval`` 10, ``start_step``,
``end_step``, ``save_steps``, ``include_regex``, ``save_all``);
``CollectionConfigurations`` name collections with their own parameters
(``train.``/``eval.``/``global.`` prefixes are accepted). A collection named
more than once is saved at the union of its configurations' steps. With no
collection configured, ``metrics`` is saved. Known collections: ``metrics``
(``losses`` is an alias), ``feature_importance``, ``predictions``, ``labels``,
``hyperparameters``, ``trees`` (``tree``), ``average_shap``, ``full_shap``; a
custom name with ``include_regex`` selects the known collections whose tensor
names the regex matches (e.g. ``.*labels|.*predictions``). The last round is
always saved too, so reports show the final model. Layout under
``<out_root>/debug-output/``::

    meta.json                       objective, num_class, feature names, datasets (written first)
    collections.json                the resolved save plan
    index.jsonl                     {"step": 10, "time": ..., "collections": [...]} per saved step,
                                    appended after that step's files: read only steps listed here
    metrics.jsonl                   {"step": 10, "values": {"train-rmse": 1.2, "validation-rmse": 1.3}}
    hyperparameters.json            {"step": 0, "values": {...}} (first save only)
    feature_importance/step-000010.json   {"step": 10, "types": {"weight": {"f0": 0.4, ...}, "gain": ...}}
                                    (weight, gain, cover, total_gain, total_cover; each sums to 1)
    predictions/step-000010.npz     ``predictions``: model output on the validation set
                                    (training set when there is none; see meta.json)
    labels/labels.npz               ``labels`` of that set (constant, written once)
    trees/step-000010.json          {"step": 10, "first_tree": 0, "first_round": 0,
                                    "trees": [<xgboost JSON dump>...]}: trees added since the previous save
    average_shap/step-000010.json   {"step": 10, "mean": {...}, "mean_abs": {...}} over <= 1000 training rows
    full_shap/step-000010.npz       ``contributions`` of those rows, ``features``

Predictions, SHAP values and dumps are computed only at save steps.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from xgboost.callback import TrainingCallback

log = logging.getLogger(__name__)

FRAMEWORK_EVENTS_DIR = Path("profiler-output") / "framework" / "events"
DEBUG_DIR = Path("debug-output")
DEFAULT_SAVE_INTERVAL = 10
SHAP_ROWS = 1000
IMPORTANCE_TYPES = ("weight", "gain", "cover", "total_gain", "total_cover")

#: Phase of the names train.py is expected to report; anything else is OTHER.
PHASES = {
    "DataLoading": "SETUP",
    "Initialization": "SETUP",
    "Setup": "SETUP",
    "ModelSave": "FINALIZE",
    "Finalization": "FINALIZE",
}

COLLECTIONS = (
    "metrics", "feature_importance", "predictions", "labels", "hyperparameters", "trees",
    "average_shap", "full_shap",
)
ALIASES = {"losses": "metrics", "tree": "trees"}
#: Representative tensor names of each collection, to resolve custom collections' include_regex.
TENSOR_NAMES = {
    "metrics": ("train-rmse", "validation-rmse", "train-logloss", "validation-logloss", "validation-auc"),
    "feature_importance": tuple(f"feature_importance/{t}/f0" for t in IMPORTANCE_TYPES),
    "predictions": ("predictions",),
    "labels": ("labels",),
    "hyperparameters": ("hyperparameters/max_depth",),
    "trees": ("trees/Tree", "trees/Node"),
    "average_shap": ("average_shap/f0",),
    "full_shap": ("full_shap/f0",),
}


# ---------------------------------------------------------------- framework event writer


class _EventWriter:
    """Appends framework events of this process to its JSON-lines file."""

    FLUSH_S = 1.0

    def __init__(self, path: Path, host: str) -> None:
        self.path = path
        self.host = host
        self._file: Any = None
        self._flushed = 0.0
        self._lock = threading.Lock()

    def write(self, name: str, phase: str, start: float, end: float, step: int | None = None,
              **extra: Any) -> None:
        event = {"Name": name, "Phase": phase, "Step": step, "StartTime": round(start, 6),
                 "EndTime": round(end, 6), "Duration": round(end - start, 6), "NodeId": self.host,
                 "Pid": os.getpid(), **extra}
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)
            # Flush by time, not per event: a round can take microseconds.
            if end - self._flushed >= self.FLUSH_S:
                self._file.flush()
                self._flushed = end

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()


_writers: dict[Path, _EventWriter] = {}
_writers_lock = threading.Lock()


def _host(host: str | None) -> str:
    return host or os.environ.get("SM_CURRENT_HOST") or "algo-1"


def _writer(out_root: Path | str, host: str | None = None) -> _EventWriter:
    path = Path(out_root) / FRAMEWORK_EVENTS_DIR / f"{_host(host)}-{os.getpid()}.jsonl"
    with _writers_lock:
        if path not in _writers:
            _writers[path] = _EventWriter(path, _host(host))
        return _writers[path]


@atexit.register
def flush_all() -> None:
    """Flush every framework event file of this process (also runs at exit)."""
    with _writers_lock:
        writers = list(_writers.values())
    for w in writers:
        w.flush()


def record_phase(out_root: Path | str, name: str, start: float, end: float, *, phase: str | None = None,
                 host: str | None = None, **extra: Any) -> None:
    """Record a phase of train.py (``start``/``end`` from ``time.time()``), e.g. ``DataLoading``.

    Cheap and never raises: profiling must not fail a training job.
    """
    try:
        w = _writer(out_root, host)
        w.write(name, phase or PHASES.get(name, "OTHER"), start, end, **extra)
        w.flush()
    except Exception:
        log.exception("could not record phase %s", name)


# ---------------------------------------------------------------- save configuration


def _int(value: Any, what: str) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        log.warning("ignoring %s=%r: not an integer", what, value)
        return None


@dataclass(frozen=True)
class SaveSpec:
    """When one configuration saves its collection (smdebug's SaveConfig semantics)."""

    interval: int = DEFAULT_SAVE_INTERVAL
    steps: frozenset[int] = frozenset()
    start: int = 0
    end: int | None = None

    def due(self, step: int) -> bool:
        if self.steps:
            return step in self.steps
        if step < self.start or (self.end is not None and step >= self.end):
            return False
        return step % max(self.interval, 1) == 0

    def as_dict(self) -> dict[str, Any]:
        return {"save_interval": self.interval, "save_steps": sorted(self.steps), "start_step": self.start,
                "end_step": self.end}


def _specs(params: Mapping[str, Any], base: SaveSpec) -> list[SaveSpec]:
    """Save specs of a parameter map; mode-prefixed keys (``eval.save_interval``) make extra specs."""
    groups: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        mode, _, name = key.rpartition(".")
        groups.setdefault(mode.lower(), {})[name] = value
    specs = [_spec(values, base) for mode, values in sorted(groups.items())
             if mode in ("", "train", "eval", "global", "predict")]
    return specs or [base]


def _spec(values: Mapping[str, Any], base: SaveSpec) -> SaveSpec:
    interval, start, end, steps = base.interval, base.start, base.end, base.steps
    if "save_interval" in values:
        interval = _int(values["save_interval"], "save_interval") or interval
    if "start_step" in values:
        start = _int(values["start_step"], "start_step") or 0
    if "end_step" in values:
        end = _int(values["end_step"], "end_step")
    if "save_steps" in values:
        parsed = (_int(s, "save_steps") for s in str(values["save_steps"]).split(",") if s.strip())
        steps = frozenset(s for s in parsed if s is not None)
    return SaveSpec(interval, steps, start, end)


def _collections_of_regex(pattern: str) -> set[str]:
    try:
        rx = re.compile(pattern)
    except re.error:
        log.warning("ignoring invalid include_regex %r", pattern)
        return set()
    return {c for c, names in TENSOR_NAMES.items() if any(rx.match(n) for n in names)}


@dataclass
class CollectionPlan:
    """Which collections are saved at which steps."""

    specs: dict[str, list[SaveSpec]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def add(self, collection: str, specs: Iterable[SaveSpec]) -> None:
        bucket = self.specs.setdefault(collection, [])
        bucket.extend(s for s in specs if s not in bucket)

    def due(self, step: int) -> set[str]:
        return {c for c, specs in self.specs.items() if any(s.due(step) for s in specs)}

    def as_dict(self) -> dict[str, Any]:
        return {"collections": {c: [s.as_dict() for s in specs] for c, specs in sorted(self.specs.items())},
                "ignored": self.ignored}


def plan_collections(debug_hook_config: Mapping[str, Any] | None) -> CollectionPlan | None:
    """Resolve a ``DebugHookConfig`` into a plan; ``None`` when there is no config."""
    if debug_hook_config is None:
        return None
    hook_params = dict(debug_hook_config.get("HookParameters") or {})
    base = _specs(hook_params, SaveSpec())[0]
    plan = CollectionPlan()
    for cfg in debug_hook_config.get("CollectionConfigurations") or []:
        raw = str(cfg.get("CollectionName", "")).strip()
        params = dict(cfg.get("CollectionParameters") or {})
        regex = params.pop("include_regex", None)
        name = ALIASES.get(raw, raw)
        if name in COLLECTIONS:
            targets = {name}
        elif name in ("all", "default") and not regex:
            targets = set(COLLECTIONS)
        else:
            targets = _collections_of_regex(str(regex)) if regex else set()
        if not targets:
            plan.ignored.append(raw)
            continue
        for target in targets:
            plan.add(target, _specs(params, base))
    if str(hook_params.get("save_all", "")).lower() == "true":
        for c in COLLECTIONS:
            plan.add(c, [base])
    if hook_params.get("include_regex"):
        for c in _collections_of_regex(str(hook_params["include_regex"])):
            plan.add(c, [base])
    if not plan.specs:  # SageMaker's XGBoost hook saves metrics when nothing else is asked for
        plan.add("metrics", [base])
    return plan


# ---------------------------------------------------------------- callbacks


class FrameworkTimer(TrainingCallback):
    """Writes Step / Evaluation / TrainingLoop events (see the module docstring)."""

    def __init__(self, writer: _EventWriter) -> None:
        super().__init__()
        self._w = writer
        self._loop_start = 0.0
        self._round_start = 0.0
        self._update_end: float | None = None
        self._patched = False
        self._rounds = 0

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        self._loop_start = time.time()
        self._patch(model)
        return model

    def _patch(self, model: xgb.Booster) -> None:
        # xgboost calls callbacks before update() and after evaluation, never in between; timing
        # update() itself is the only way to split a round into training and evaluation time.
        original = model.update

        def timed_update(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            finally:
                self._update_end = time.time()

        try:
            model.update = timed_update  # type: ignore[method-assign]
            self._patched = True
        except AttributeError:
            self._patched = False

    def before_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        self._round_start = time.time()
        self._update_end = None
        return False

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        now = time.time()
        self._rounds += 1
        split = self._update_end
        if split is None:  # update() not observed: the whole round counts as the step
            self._w.write("Step", "TRAIN", self._round_start, now, epoch)
            return False
        self._w.write("Step", "TRAIN", self._round_start, split, epoch)
        if evals_log:
            self._w.write("Evaluation", "EVAL", split, now, epoch)
        return False

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        if self._patched:
            model.__dict__.pop("update", None)
            self._patched = False
        self._w.write("TrainingLoop", "LOOP", self._loop_start, time.time(), None, Rounds=self._rounds)
        self._w.flush()
        return model


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":"), default=str))
    os.replace(tmp, path)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _append_line(path: Path, obj: Any) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")


def _step_name(step: int, ext: str) -> str:
    return f"step-{step:06d}.{ext}"


class DebugCollector(TrainingCallback):
    """Saves the planned Debugger collections at their steps (see the module docstring)."""

    def __init__(self, out_dir: Path, plan: CollectionPlan, dtrain: xgb.DMatrix | None,
                 dvalid: xgb.DMatrix | None, hyperparameters: Mapping[str, Any] | None,
                 writer: _EventWriter | None = None) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.plan = plan
        self._dtrain = dtrain
        self._dpred = dvalid if dvalid is not None else dtrain
        self._pred_set = "validation" if dvalid is not None else "train"
        self._hp = {str(k): str(v) for k, v in (hyperparameters or {}).items()}
        self._writer = writer
        self._saved: set[str] = set()  # write-once collections already written
        self._trees_done = 0
        self._rounds_done = 0
        self._last: tuple[int, Any] | None = None
        self._last_saved: int | None = None
        self._shap_rows: xgb.DMatrix | None = None

    # -- lifecycle

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.out_dir / "meta.json", self._meta(model))
        _write_json(self.out_dir / "collections.json", self.plan.as_dict())
        return model

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        self._last = (epoch, evals_log)
        due = self.plan.due(epoch)
        if due:
            self._save(model, epoch, evals_log, due)
        return False

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        if self._last is not None and self._last[0] != self._last_saved:
            epoch, evals_log = self._last
            self._save(model, epoch, evals_log, set(self.plan.specs))
        return model

    # -- saving

    def _meta(self, model: xgb.Booster) -> dict[str, Any]:
        names = None
        if self._dpred is not None and self._dpred.feature_names:
            names = list(self._dpred.feature_names)
        return {"objective": self._hp.get("objective"), "num_class": self._hp.get("num_class"),
                "booster": self._hp.get("booster", "gbtree"), "predictions_dataset": self._pred_set,
                "feature_names": names,
                "num_features": None if self._dpred is None else int(self._dpred.num_col()),
                "created": time.time(), "format": "sagestack-debug-1"}

    def _save(self, model: xgb.Booster, step: int, evals_log: Any, due: set[str]) -> None:
        start = time.time()
        done = []
        for name in sorted(due):
            try:
                if getattr(self, f"_save_{name}")(model, step, evals_log):
                    done.append(name)
            except Exception:  # a collection that cannot be computed must not stop training
                log.exception("could not save collection %s at step %d", name, step)
        _append_line(self.out_dir / "index.jsonl", {"step": step, "time": time.time(), "collections": done})
        self._last_saved = step
        if self._writer is not None:
            self._writer.write("DebugSave", "DEBUG", start, time.time(), step, Collections=done)

    def _save_metrics(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        values = {}
        for data, metrics in (evals_log or {}).items():
            for metric, history in metrics.items():
                last = history[-1]
                values[f"{data}-{metric}"] = float(last[0] if isinstance(last, tuple) else last)
        _append_line(self.out_dir / "metrics.jsonl", {"step": step, "values": values})
        return True

    def _save_hyperparameters(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        if "hyperparameters" in self._saved:
            return False
        _write_json(self.out_dir / "hyperparameters.json", {"step": step, "values": self._hp})
        self._saved.add("hyperparameters")
        return True

    def _save_feature_importance(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        types = {}
        for kind in IMPORTANCE_TYPES:
            try:
                scores = model.get_score(importance_type=kind)
            except (xgb.core.XGBoostError, ValueError):  # e.g. gblinear has weights only
                continue
            total = float(sum(np.sum(v) for v in scores.values()))
            if total > 0:
                types[kind] = {f: float(np.sum(v)) / total for f, v in scores.items()}
        _write_json(self.out_dir / "feature_importance" / _step_name(step, "json"),
                    {"step": step, "types": types})
        return True

    def _save_predictions(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        if self._dpred is None:
            return False
        pred = model.predict(self._dpred)
        _write_npz(self.out_dir / "predictions" / _step_name(step, "npz"), predictions=pred.astype(np.float32))
        return True

    def _save_labels(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        if self._dpred is None or "labels" in self._saved:
            return False
        _write_npz(self.out_dir / "labels" / "labels.npz", labels=self._dpred.get_label().astype(np.float32))
        self._saved.add("labels")
        return True

    def _save_trees(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        if self._hp.get("booster", "gbtree") not in ("gbtree", "dart"):
            return False
        # Dump only the rounds added since the last save: dumping the whole model every time is
        # quadratic in the number of rounds. Slicing a booster copies just those trees (in C).
        rounds = model.num_boosted_rounds()
        if rounds <= self._rounds_done:
            return False
        try:
            part = model[self._rounds_done:rounds] if self._rounds_done else model
            dump = part.get_dump(dump_format="json", with_stats=True)
        except (xgb.core.XGBoostError, ValueError):  # a booster that cannot be sliced: dump all of it
            dump = model.get_dump(dump_format="json", with_stats=True)[self._trees_done:]
        new = [json.loads(t) for t in dump]
        _write_json(self.out_dir / "trees" / _step_name(step, "json"),
                    {"step": step, "first_tree": self._trees_done, "first_round": self._rounds_done,
                     "trees": new})
        self._trees_done += len(new)
        self._rounds_done = rounds
        return True

    def _shap(self, model: xgb.Booster) -> tuple[np.ndarray, list[str]] | None:
        if self._dtrain is None:
            return None
        if self._shap_rows is None:
            self._shap_rows = self._shap_sample(self._dtrain)
            if self._shap_rows is None:
                self._dtrain = None  # do not try again at every save step
                return None
        contrib = model.predict(self._shap_rows, pred_contribs=True)
        names = list(self._dtrain.feature_names or [f"f{i}" for i in range(self._dtrain.num_col())])
        return contrib, [*names, "bias"]

    @staticmethod
    def _shap_sample(dtrain: xgb.DMatrix) -> xgb.DMatrix | None:
        """At most SHAP_ROWS evenly spread training rows: SHAP values cost O(rows x trees x depth)."""
        n = dtrain.num_row()
        rows = np.linspace(0, n - 1, num=min(n, SHAP_ROWS)).astype(np.int64)
        try:
            return dtrain.slice(rows)
        except xgb.core.XGBoostError:  # QuantileDMatrix cannot be sliced
            if n <= 10 * SHAP_ROWS:
                return dtrain
            log.warning("SHAP collections skipped: the training matrix (%d rows) cannot be sampled", n)
            return None

    def _save_average_shap(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        got = self._shap(model)
        if got is None:
            return False
        contrib, names = got
        axes = tuple(range(contrib.ndim - 1))  # rows (and classes, for multiclass)
        mean, mean_abs = contrib.mean(axis=axes), np.abs(contrib).mean(axis=axes)
        _write_json(self.out_dir / "average_shap" / _step_name(step, "json"),
                    {"step": step, "mean": dict(zip(names, map(float, mean), strict=True)),
                     "mean_abs": dict(zip(names, map(float, mean_abs), strict=True))})
        return True

    def _save_full_shap(self, model: xgb.Booster, step: int, evals_log: Any) -> bool:
        got = self._shap(model)
        if got is None:
            return False
        contrib, names = got
        _write_npz(self.out_dir / "full_shap" / _step_name(step, "npz"),
                   contributions=contrib.astype(np.float32), features=np.array(names))
        return True


def profiler_enabled(profiler_config: Mapping[str, Any] | None) -> bool:
    return profiler_config is not None and not profiler_config.get("DisableProfiler", False)


def make_callbacks(
    out_root: Path | str,
    debug_hook_config: Mapping[str, Any] | None,
    profiler_config: Mapping[str, Any] | None,
    dtrain: xgb.DMatrix | None,
    dvalid: xgb.DMatrix | None,
    hyperparameters: Mapping[str, Any] | None,
    *,
    host: str | None = None,
) -> list[TrainingCallback]:
    """The callbacks to put first in ``xgboost.train(callbacks=...)``; empty when nothing is configured."""
    out_root = Path(out_root)
    callbacks: list[TrainingCallback] = []
    writer = _writer(out_root, host) if profiler_enabled(profiler_config) else None
    if writer is not None:
        callbacks.append(FrameworkTimer(writer))
    plan = plan_collections(debug_hook_config)
    if plan is not None:
        callbacks.append(DebugCollector(out_root / DEBUG_DIR, plan, dtrain, dvalid, hyperparameters, writer))
    return callbacks
