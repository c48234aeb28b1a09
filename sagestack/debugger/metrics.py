"""Which saved metrics are scores (bigger is better), error rates or losses.

The list is SageMaker's XGBoost one. It lives here, at the bottom, because both
sides need it: the Debugger rules (which of a job's metric tensors are losses,
and which way is better) and the training side above them
(the built-in algorithm's metrics module: tuning directions, early stopping).
"""

from __future__ import annotations

#: Metrics where bigger is better (SageMaker's XGBoost list, kept as is).
MAXIMIZE_METRICS: tuple[str, ...] = (
    "accuracy",
    "auc",
    "aucpr",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "map",
    "ndcg",
    "precision",
    "r2",
    "recall",
    "precision_macro",
    "precision_micro",
    "recall_macro",
    "recall_micro",
)

#: Error-rate metrics are not losses; the loss rules skip them unless a tensor_regex asks for them.
RATE_METRICS: tuple[str, ...] = ("error", "merror")


def metric_of(tensor: str) -> str:
    """``auc`` of the tensor ``validation-auc`` (a saved metric is named ``<data set>-<metric>``)."""
    return tensor.split("-", 1)[1] if "-" in tensor else tensor


def _base(tensor: str) -> str:
    return metric_of(tensor).split("@", 1)[0]  # ndcg@5 is an ndcg


def higher_is_better(tensor: str) -> bool:
    return _base(tensor) in MAXIMIZE_METRICS


def is_loss(tensor: str) -> bool:
    base = _base(tensor)
    return base not in MAXIMIZE_METRICS and base not in RATE_METRICS
