"""Metric names, directions and the log regexes the platform matches them with.

Every boosting round prints one line on stdout such as
``[3]#011train-logloss:0.41234#011validation-logloss:0.43210`` (``#011`` is
the escaped TAB that CloudWatch Logs shows). A metric named ``validation:auc``
is the value after ``#011validation-auc:`` on such a line.

This module imports nothing heavy: the API server uses it to fill in the
built-in algorithm's MetricDefinitions and tuning objectives.
"""

from __future__ import annotations

# Metrics where bigger is better: defined beside the Debugger rules, which read the list too.
from sagestack.debugger.metrics import MAXIMIZE_METRICS

#: Metrics where smaller is better. SageMaker lists interval-regression-accuracy
#: here although it is an accuracy; tuning jobs depend on the direction, so it
#: is kept where SageMaker has it.
MINIMIZE_METRICS: tuple[str, ...] = (
    "aft-nloglik",
    "cox-nloglik",
    "error",
    "gamma-deviance",
    "gamma-nloglik",
    "interval-regression-accuracy",
    "logloss",
    "mae",
    "mape",
    "merror",
    "mlogloss",
    "mphe",
    "mse",
    "poisson-nloglik",
    "rmse",
    "rmsle",
    "tweedie-nloglik",
)

ALL_METRICS: tuple[str, ...] = MAXIMIZE_METRICS + MINIMIZE_METRICS

#: Eval-set names as they appear in log lines and metric names.
DATA_SETS: tuple[str, ...] = ("train", "validation")

#: How a TAB printed by the algorithm appears in CloudWatch Logs.
TAB = "#011"

# The numeric capture SageMaker injects for built-in XGBoost: it rejects nan/inf,
# so a diverging job reports no value instead of a bogus one.
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_regex(data_set: str, metric: str) -> str:
    """The regex whose first group is ``metric`` on ``data_set`` in a round's log line."""
    return rf".*\[[0-9]+\].*{TAB}{data_set}-{metric}:{_NUMBER}.*"


def metric_definitions() -> list[dict[str, str]]:
    """MetricDefinitions for every ``train:``/``validation:`` metric the algorithm can print."""
    return [
        {"Name": f"{data_set}:{metric}", "Regex": metric_regex(data_set, metric)}
        for metric in ALL_METRICS
        for data_set in DATA_SETS
    ]


def direction(metric: str) -> str:
    """``Maximize`` or ``Minimize`` for a bare metric name (``auc``) or a full one (``validation:auc``)."""
    bare = metric.split(":", 1)[-1]
    return "Maximize" if bare in MAXIMIZE_METRICS else "Minimize"


def tuning_objective_metrics() -> dict[str, str]:
    """Legal ``_tuning_objective_metric`` values (only ``validation:*``) with their direction."""
    return {f"validation:{m}": direction(m) for m in ALL_METRICS}
