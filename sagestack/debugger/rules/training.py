"""SageMaker Debugger's built-in XGBoost rules, over the tensors the training hook saved.

Parameters and defaults are those AWS documents. The logic is sagestack's own
reading of the rule descriptions; where the description is ambiguous the
choice is stated in the rule's description.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from sagestack.debugger.data import JobData
from sagestack.debugger.metrics import higher_is_better, is_loss, metric_of
from sagestack.debugger.rules.engine import Check, Param, Registry, RuleConfigError, registrar

RULES: Registry = {}
_rule = registrar(RULES)


# ------------------------------------------------------------------ Debugger rules: helpers


def _dataset(tensor: str) -> str:
    return tensor.split("-", 1)[0]


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
    losses = {k: v for k, v in metrics.items() if is_loss(k)}
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
        train = f"train-{metric_of(name)}"
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

