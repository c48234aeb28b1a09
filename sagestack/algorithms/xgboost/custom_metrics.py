"""Metrics SageMaker's container computes itself because xgboost has none of that name.

``accuracy``, ``f1``, ``precision``... are classification scores on predicted
classes; ``mse`` and ``r2`` are regression scores. They are computed from
sufficient statistics (a confusion matrix, sums of squares) so that in
distributed training one all-reduce gives every worker the score of the whole
data set, as xgboost's own metrics do. Definitions follow scikit-learn with
``zero_division=0``: macro averages run over the classes present in the
labels or the predictions; ``precision``/``recall``/``f1_binary`` score
class 1 and need binary labels.

``rmse`` and ``mae`` stay xgboost's own metrics (identical unweighted
values, and they honour instance weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import xgboost as xgb
from xgboost import collective

from sagestack.algorithms.errors import UserError

CLASSIFICATION = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "precision",
    "precision_macro",
    "precision_micro",
    "recall",
    "recall_macro",
    "recall_micro",
)
REGRESSION = ("mse", "r2")
CUSTOM_METRICS = frozenset(CLASSIFICATION + REGRESSION)
_BINARY_ONLY = frozenset({"precision", "recall", "f1_binary"})

# Objectives whose transformed prediction is a probability of class 1.
_PROBABILITY_OBJECTIVES = frozenset({"binary:logistic", "reg:logistic", "binary:hinge"})


def split_metrics(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(xgboost's own metrics, container-computed ones), each in the given order."""
    native = [n for n in names if n not in CUSTOM_METRICS]
    custom = [n for n in names if n in CUSTOM_METRICS]
    return native, custom


def _all_reduce(stats: np.ndarray) -> np.ndarray:
    if collective.is_distributed():
        return collective.allreduce(stats, collective.Op.SUM)
    return stats


def _predicted_classes(predt: np.ndarray, n_rows: int, objective: str | None) -> np.ndarray:
    """Class per row from xgboost's transformed predictions."""
    if predt.ndim == 2 or predt.size > n_rows:
        return predt.reshape(n_rows, -1).argmax(axis=1)
    if objective == "multi:softmax":
        return predt.astype(np.int64)
    if objective in _PROBABILITY_OBJECTIVES:
        return (predt > 0.5).astype(np.int64)
    # Raw margins (logitraw, regression objectives): the sign decides, as in SageMaker.
    return (predt > 0.0).astype(np.int64)


def _confusion(labels: np.ndarray, classes: np.ndarray, n_classes: int, metric: str) -> np.ndarray:
    truth = labels.astype(np.int64)
    if labels.size and ((truth != labels).any() or truth.min() < 0 or truth.max() >= n_classes):
        raise UserError(
            f"Metric '{metric}' needs class labels 0..{n_classes - 1}; got labels such as "
            f"{labels[(truth != labels) | (truth < 0) | (truth >= n_classes)][0]:g}."
        )
    predicted = np.clip(classes, 0, n_classes - 1)
    cells = np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
    return _all_reduce(cells.astype(np.float64)).reshape(n_classes, n_classes)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _classification_score(name: str, cm: np.ndarray) -> float:
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    total = cm.sum()
    precision = _safe_ratio(tp, predicted)
    recall = _safe_ratio(tp, actual)
    f1 = _safe_ratio(2 * tp, predicted + actual)
    present = (predicted + actual) > 0
    if name in ("accuracy", "precision_micro", "recall_micro"):
        return float(tp.sum() / total) if total else 0.0
    if name == "balanced_accuracy":
        return float(recall[actual > 0].mean()) if (actual > 0).any() else 0.0
    if name in _BINARY_ONLY:
        return float({"precision": precision, "recall": recall, "f1_binary": f1}[name][1])
    macro = {"f1": f1, "f1_macro": f1, "precision_macro": precision, "recall_macro": recall}[name]
    return float(macro[present].mean()) if present.any() else 0.0


def _regression_scores(predt: np.ndarray, labels: np.ndarray, metric: str) -> dict[str, float]:
    if predt.size != labels.size:
        raise UserError(f"Metric '{metric}' needs one prediction per row (a single-output objective).")
    error = predt.astype(np.float64) - labels
    y = labels.astype(np.float64)
    n, sse, sum_y, sum_y2 = _all_reduce(np.array([y.size, (error**2).sum(), y.sum(), (y**2).sum()]))
    if n == 0:
        return {"mse": 0.0, "r2": 0.0}
    sst = sum_y2 - sum_y**2 / n
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
    return {"mse": float(sse / n), "r2": float(r2)}


def make_custom_metric(
    names: Sequence[str], objective: str | None, num_class: int | None
) -> Callable[[np.ndarray, xgb.DMatrix], list[tuple[str, float]]] | None:
    """An ``xgboost.train(custom_metric=...)`` function scoring ``names``, or ``None`` if empty."""
    names = list(names)
    if not names:
        return None
    n_classes = num_class or 2
    wants_classes = [n for n in names if n in CLASSIFICATION]
    for name in wants_classes:
        if name in _BINARY_ONLY and n_classes > 2:
            raise UserError(
                f"Metric '{name}' scores binary classification; with num_class={n_classes} use "
                f"{name.removesuffix('_binary')}_macro or {name.removesuffix('_binary')}_micro."
            )

    def custom_metric(predt: np.ndarray, dmatrix: xgb.DMatrix) -> list[tuple[str, float]]:
        labels = dmatrix.get_label()
        scores: dict[str, float] = {}
        if wants_classes:
            classes = _predicted_classes(predt, labels.size, objective)
            cm = _confusion(labels, classes, n_classes, wants_classes[0])
            scores.update({n: _classification_score(n, cm) for n in wants_classes})
        if any(n in REGRESSION for n in names):
            scores.update(_regression_scores(predt, labels, next(n for n in names if n in REGRESSION)))
        return [(n, scores[n]) for n in names]

    return custom_metric
