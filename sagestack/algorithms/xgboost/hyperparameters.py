"""Hyperparameters of built-in XGBoost: the table, the validator and the xgboost params.

SageMaker passes hyperparameters as a JSON object of strings. The container
validates them in a fixed order and stops at the first problem, with messages
users see in FailureReason and may search for, so both order and text follow
SageMaker's algorithm toolkit:

1. aliases are replaced (``learning_rate`` -> ``eta`` ...);
2. ``Missing required hyperparameter: <hp>``;
3. in the user's order, ``Extraneous hyperparameter found: <hp>`` or
   ``Hyperparameter <hp>: could not parse value (caused by ValueError)``;
4. ``Hyperparameter <hp>: <v> is not in <range>`` (lists: ``value [...] not in range [...]``);
5. cross-parameter checks.

The container sets no defaults: what is not given falls through to the
xgboost library. ``doc_default`` only records what AWS documents.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sagestack.algorithms.errors import UserError
from sagestack.algorithms.xgboost import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interval:
    """A numeric range printed the way SageMaker prints it: ``[0, 1]``, ``(0, 1]``, ``[1, +inf)``."""

    min_closed: float | None = None
    min_open: float | None = None
    max_closed: float | None = None
    max_open: float | None = None

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        return not (
            (self.min_open is not None and value <= self.min_open)
            or (self.min_closed is not None and value < self.min_closed)
            or (self.max_open is not None and value >= self.max_open)
            or (self.max_closed is not None and value > self.max_closed)
        )

    def __str__(self) -> str:
        if self.min_open is not None:
            low = f"({self.min_open}, "
        elif self.min_closed is not None:
            low = f"[{self.min_closed}, "
        else:
            low = "(-inf, "
        if self.max_open is not None:
            return f"{low}{self.max_open})"
        if self.max_closed is not None:
            return f"{low}{self.max_closed}]"
        return f"{low}+inf)"


@dataclass(frozen=True)
class Choices:
    """A categorical range; printed as a Python list like SageMaker's."""

    values: tuple[Any, ...]

    def __contains__(self, value: object) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return str(list(self.values))


Range = Interval | Choices

# Kinds of hyperparameter: how the string is parsed and how the range is checked.
INT, FLOAT, CATEGORICAL, COMMA_LIST, TUPLE, NESTED_LIST = (
    "Integer",
    "Continuous",
    "Categorical",
    "CommaList",
    "Tuple",
    "NestedList",
)


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    kind: str
    range: Range
    required: bool = False
    #: Default documented by AWS (informational; never applied, see module doc).
    doc_default: str | None = None
    #: Range AWS recommends for tuning (``None``: not tunable).
    tunable_range: Interval | None = None


def _int(name: str, rng: Interval, **kw: Any) -> Hyperparameter:
    return Hyperparameter(name, INT, rng, **kw)


def _float(name: str, rng: Interval, **kw: Any) -> Hyperparameter:
    return Hyperparameter(name, FLOAT, rng, **kw)


def _cat(name: str, *values: str, **kw: Any) -> Hyperparameter:
    return Hyperparameter(name, CATEGORICAL, Choices(values), **kw)


_UNIT = Interval(min_closed=0, max_closed=1)
_NON_NEGATIVE = Interval(min_closed=0)
_POSITIVE_FRACTION = Interval(min_open=0, max_closed=1)
_TRUE_FALSE = ("true", "false")

OBJECTIVES: tuple[str, ...] = (
    "aft_loss_distribution",  # listed by SageMaker (a bug there); accepted, then xgboost rejects it
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "reg:linear",
    "reg:squarederror",
    "reg:logistic",
    "reg:gamma",
    "reg:pseudohubererror",
    "reg:squaredlogerror",
    "reg:absoluteerror",
    "reg:tweedie",
    "survival:aft",
    "survival:cox",
)

TREE_UPDATERS: tuple[str, ...] = (
    "grow_colmaker",
    "distcol",
    "grow_histmaker",
    "grow_local_histmaker",
    "grow_skmaker",
    "sync",
    "refresh",
    "prune",
    "grow_quantile_histmaker",
)
_GROW_UPDATERS = frozenset(
    {"grow_colmaker", "distcol", "grow_histmaker", "grow_local_histmaker", "grow_quantile_histmaker"}
)
LINEAR_UPDATERS: tuple[str, ...] = ("shotgun", "coord_descent")

TABLE: tuple[Hyperparameter, ...] = (
    _int("num_round", Interval(min_closed=1), required=True,
         tunable_range=Interval(min_closed=1, max_closed=4000)),
    _int("csv_weights", _UNIT, doc_default="0"),
    _int("early_stopping_rounds", Interval(min_closed=1)),
    _cat("booster", "gbtree", "gblinear", "dart", doc_default="gbtree"),
    _int("verbosity", Interval(min_closed=0, max_closed=3), doc_default="1"),
    _int("nthread", Interval(min_closed=1)),
    _float("eta", _UNIT, doc_default="0.3", tunable_range=Interval(min_closed=0.1, max_closed=0.5)),
    _float("gamma", _NON_NEGATIVE, doc_default="0", tunable_range=Interval(min_closed=0, max_closed=5)),
    _int("max_depth", _NON_NEGATIVE, doc_default="6", tunable_range=Interval(min_closed=0, max_closed=10)),
    _float("min_child_weight", _NON_NEGATIVE, doc_default="1",
           tunable_range=Interval(min_closed=0, max_closed=120)),
    _float("max_delta_step", _NON_NEGATIVE, doc_default="0",
           tunable_range=Interval(min_closed=0, max_closed=10)),
    _float("subsample", _POSITIVE_FRACTION, doc_default="1",
           tunable_range=Interval(min_closed=0.5, max_closed=1)),
    _float("colsample_bytree", _POSITIVE_FRACTION, doc_default="1",
           tunable_range=Interval(min_closed=0.5, max_closed=1)),
    _float("colsample_bylevel", _POSITIVE_FRACTION, doc_default="1",
           tunable_range=Interval(min_closed=0.1, max_closed=1)),
    _float("colsample_bynode", _POSITIVE_FRACTION, doc_default="1",
           tunable_range=Interval(min_closed=0.1, max_closed=1)),
    _float("lambda", _NON_NEGATIVE, doc_default="1", tunable_range=Interval(min_closed=0, max_closed=1000)),
    _float("alpha", _NON_NEGATIVE, doc_default="0", tunable_range=Interval(min_closed=0, max_closed=1000)),
    _cat("tree_method", "auto", "exact", "approx", "hist", "gpu_hist", doc_default="auto"),
    _float("sketch_eps", Interval(min_open=0, max_open=1), doc_default="0.03"),
    _float("scale_pos_weight", Interval(min_open=0), doc_default="1"),
    Hyperparameter("updater", COMMA_LIST, Choices(TREE_UPDATERS + LINEAR_UPDATERS),
                   doc_default="grow_colmaker,prune"),
    _cat("dsplit", "row", "col"),
    _int("refresh_leaf", _UNIT, doc_default="1"),
    _cat("process_type", "default", "update", doc_default="default"),
    _cat("grow_policy", "depthwise", "lossguide", doc_default="depthwise"),
    _int("max_leaves", _NON_NEGATIVE, doc_default="0"),
    _int("max_bin", _NON_NEGATIVE, doc_default="256"),
    _cat("predictor", "auto", "cpu_predictor", "gpu_predictor"),
    Hyperparameter("monotone_constraints", TUPLE, Choices((-1, 0, 1))),
    Hyperparameter("interaction_constraints", NESTED_LIST, Interval(min_closed=1)),
    _cat("sample_type", "uniform", "weighted", doc_default="uniform"),
    _cat("normalize_type", "tree", "forest", doc_default="tree"),
    _float("rate_drop", _UNIT, doc_default="0.0"),
    _int("one_drop", _UNIT, doc_default="0"),
    _float("skip_drop", _UNIT, doc_default="0.0"),
    _float("lambda_bias", _UNIT, doc_default="0"),
    _float("tweedie_variance_power", Interval(min_open=1, max_open=2), doc_default="1.5"),
    _cat("objective", *OBJECTIVES, doc_default="reg:squarederror"),
    _int("num_class", Interval(min_closed=2)),
    _float("base_score", _NON_NEGATIVE, doc_default="0.5"),
    _int("_kfold", Interval(min_closed=2)),
    _int("_num_cv_round", Interval(min_closed=1)),
    _cat("_tuning_objective_metric", *metrics.tuning_objective_metrics()),
    Hyperparameter("eval_metric", COMMA_LIST, Choices(metrics.ALL_METRICS)),
    _int("seed", Interval(min_open=-(2**31), max_open=2**31 - 1), doc_default="0"),
    _int("num_parallel_tree", Interval(min_closed=1)),
    _cat("save_model_on_termination", *_TRUE_FALSE, doc_default="false"),
    _cat("aft_loss_distribution", "normal", "logistic", "extreme"),
    _float("aft_loss_distribution_scale", _NON_NEGATIVE),
    _cat("deterministic_histogram", *_TRUE_FALSE, doc_default="true"),
    _cat("sampling_method", "uniform", "gradient_based"),
    _int("prob_buffer_row", Interval(min_open=1.0)),
    _cat("use_dask_gpu_training", *_TRUE_FALSE, doc_default="false"),
)

HYPERPARAMETERS: dict[str, Hyperparameter] = {hp.name: hp for hp in TABLE}

ALIASES: dict[str, str] = {
    "learning_rate": "eta",
    "min_split_loss": "gamma",
    "reg_lambda": "lambda",
    "reg_alpha": "alpha",
}

#: Hyperparameters the container consumes itself; never passed to xgboost as params.
CONTAINER_ONLY = frozenset(
    {
        "num_round",
        "csv_weights",
        "early_stopping_rounds",
        "eval_metric",
        "_tuning_objective_metric",
        "_kfold",
        "_num_cv_round",
        "save_model_on_termination",
        "use_dask_gpu_training",
    }
)

#: Accepted for compatibility but no longer read by xgboost >= 2, so not passed
#: (xgboost would only warn that they are unused).
OBSOLETE = frozenset(
    {"predictor", "dsplit", "lambda_bias", "deterministic_histogram", "prob_buffer_row", "sketch_eps"}
)


# ---------------------------------------------------------------- parsing


def _parse_tuple(text: str) -> tuple[int, ...]:
    value = ast.literal_eval(text)
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"not a tuple of integers: {text}")


def _parse_nested(text: str) -> list[list[int]]:
    value = ast.literal_eval(text)
    if isinstance(value, list | tuple) and all(
        isinstance(inner, list | tuple) and all(isinstance(v, int) for v in inner) for inner in value
    ):
        return [list(inner) for inner in value]
    raise ValueError(f"not a nested list of integers: {text}")


_PARSERS: dict[str, Callable[[str], Any]] = {
    INT: int,
    FLOAT: float,
    CATEGORICAL: str,
    COMMA_LIST: lambda text: text.split(","),
    TUPLE: _parse_tuple,
    NESTED_LIST: _parse_nested,
}


def _parse(hp: Hyperparameter, raw: Any) -> Any:
    try:
        return _PARSERS[hp.kind](str(raw))
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UserError(f"Hyperparameter {hp.name}: could not parse value", caused_by=exc) from exc


# ---------------------------------------------------------------- ranges


def _check_eval_metric(metric: str) -> bool:
    """One eval_metric entry: a known name or ``error``/``ndcg``/``map`` with ``@<threshold>``."""
    if "<function" in metric:
        raise UserError(f"User defined evaluation metric {metric} is not supported yet.")
    if "@" not in metric:
        return metric in metrics.ALL_METRICS
    name, threshold = (part.strip() for part in metric.split("@", 1))
    if name not in ("error", "ndcg", "map"):
        raise UserError(
            f"Metric '{metric}' is not supported. Parameter 'eval_metric' with customized threshold should "
            "be one of these options: 'error', 'ndcg', 'map'."
        )
    try:
        float(threshold)
    except ValueError as exc:
        raise UserError(f"Threshold value 't' in '{name}@t' expects float input.") from exc
    return True


def _in_range(hp: Hyperparameter, value: Any) -> bool:
    if hp.kind == COMMA_LIST:
        check = _check_eval_metric if hp.name == "eval_metric" else hp.range.__contains__
        return all(check(v) for v in value)
    if hp.kind == TUPLE:
        return all(v in hp.range for v in value)
    if hp.kind == NESTED_LIST:
        return all(v in hp.range for inner in value for v in inner)
    return value in hp.range


def _check_range(hp: Hyperparameter, value: Any) -> None:
    if _in_range(hp, value):
        return
    if hp.kind in (COMMA_LIST, TUPLE, NESTED_LIST):
        raise UserError(f"Hyperparameter {hp.name}: value {value} not in range {hp.range}")
    raise UserError(f"Hyperparameter {hp.name}: {value} is not in {hp.range}")


# ---------------------------------------------------------------- cross-parameter checks


def _check_updater(cfg: Mapping[str, Any]) -> None:
    updaters = cfg.get("updater")
    if updaters is None:
        return
    if cfg.get("booster") == "gblinear":
        if not (len(updaters) == 1 and updaters[0] in LINEAR_UPDATERS):
            raise UserError("Linear updater should be one of these options: 'shotgun', 'coord_descent'.")
    elif cfg.get("process_type") == "update":
        if not all(u in ("refresh", "prune") for u in updaters):
            raise UserError("process_type 'update' can only be used with updater 'refresh' and 'prune'")
    else:
        if not all(u in TREE_UPDATERS for u in updaters):
            raise UserError(
                "Tree updater should be selected from these options: 'grow_colmaker', 'distcol', "
                "'grow_histmaker', 'grow_local_histmaker', 'grow_skmaker', 'grow_quantile_histmaker', "
                "'sync', 'refresh', 'prune', 'shortgun', 'coord_descent'."
            )
        if sum(u in _GROW_UPDATERS for u in updaters) > 1:
            raise UserError(
                "Only one tree grow plugin can be selected. Choose one from the following: "
                "'grow_colmaker', 'distcol', 'grow_histmaker', 'grow_local_histmaker', 'grow_skmaker'"
            )


def _check_objective(cfg: Mapping[str, Any]) -> None:
    if cfg.get("objective") in ("multi:softmax", "multi:softprob") and "num_class" not in cfg:
        raise UserError("Require input for parameter 'num_class' for multi-classification")


def _check_eval_metric_objective(cfg: Mapping[str, Any]) -> None:
    eval_metric = cfg.get("eval_metric")
    if eval_metric is None:
        return
    # SageMaker's container crashes with KeyError here when no objective is set;
    # checking against xgboost's default objective instead is the useful reading.
    objective = cfg.get("objective", "reg:squarederror")
    if "auc" in eval_metric and not objective.startswith(("binary:", "rank:")):
        raise UserError("Metric 'auc' can only be applied for classification and ranking problems.")
    if "aft-nloglik" in eval_metric and objective != "survival:aft":
        raise UserError("Metric 'aft-nloglik' can only be applied for 'survival:aft' objective.")


def _check_constraints(cfg: Mapping[str, Any]) -> None:
    tree_method = cfg.get("tree_method")
    if "monotone_constraints" in cfg and tree_method not in ("exact", "hist"):
        raise UserError(
            "monotone_constraints can be used only when the tree_method parameter is set to "
            "either 'exact' or 'hist'."
        )
    if "interaction_constraints" in cfg and tree_method not in ("exact", "hist", "approx"):
        raise UserError(
            "interaction_constraints can be used only when the tree_method parameter is set to "
            "either 'exact', 'hist' or 'approx'."
        )


_CROSS_CHECKS: tuple[Callable[[Mapping[str, Any]], None], ...] = (
    _check_updater,
    _check_objective,
    _check_eval_metric_objective,
    _check_constraints,
)


# ---------------------------------------------------------------- public API


def replace_aliases(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Rename aliases to their canonical names; a later duplicate wins, as in SageMaker."""
    return {ALIASES.get(name, name): value for name, value in raw.items()}


def validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the string dict of ``hyperparameters.json``; return typed values.

    Raises :class:`UserError` with SageMaker's message for the first problem found.
    """
    user = replace_aliases(raw)
    for hp in TABLE:
        if hp.required and hp.name not in user:
            raise UserError(f"Missing required hyperparameter: {hp.name}")
    typed: dict[str, Any] = {}
    for name, value in user.items():
        hp = HYPERPARAMETERS.get(name)
        if hp is None:
            raise UserError(f"Extraneous hyperparameter found: {name}")
        typed[name] = _parse(hp, value)
    for name, value in typed.items():
        _check_range(HYPERPARAMETERS[name], value)
    for check in _CROSS_CHECKS:
        check(typed)
    return typed


def xgb_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Booster params for ``xgboost.train`` from validated hyperparameters.

    Leaves out what the container consumes itself (``num_round``, metrics,
    early stopping...) and what xgboost no longer reads. ``eval_metric`` is
    set by the trainer, which also adds the tuning objective.
    """
    params: dict[str, Any] = {}
    for name, value in cfg.items():
        if name in CONTAINER_ONLY:
            continue
        if name in OBSOLETE:
            log.info("Hyperparameter %s is accepted but has no effect in this XGBoost version.", name)
            continue
        params[name] = _to_xgb_value(name, value)
    if params.get("objective") == "reg:linear":
        params["objective"] = "reg:squarederror"  # what xgboost itself does, minus its warning
    if params.get("tree_method") == "gpu_hist":
        # xgboost >= 2 spells this hist + device=cuda; instances here have no GPU.
        log.warning("tree_method gpu_hist: no GPU on this instance, training with tree_method hist on CPU.")
        params["tree_method"] = "hist"
    return params


def _to_xgb_value(name: str, value: Any) -> Any:
    if name == "updater":
        return ",".join(value)
    if name == "monotone_constraints":
        return "(" + ",".join(str(v) for v in value) + ")"
    if name == "interaction_constraints":
        return str(value)
    return value


def check_supported(cfg: Mapping[str, Any]) -> None:
    """Reject valid hyperparameters that ask for features this server does not have."""
    if cfg.get("use_dask_gpu_training") == "true":
        raise UserError(
            "Some configurations unsuitable for Dask GPU training were found: "
            "Dask training is only available for `gpu_hist` training on GPU instances."
        )
    if "_kfold" in cfg:
        raise UserError("Hyperparameter _kfold: k-fold cross-validation is not supported by this server.")

