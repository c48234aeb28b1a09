"""Metric definitions of built-in XGBoost and the metrics its container computes itself."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import xgboost as xgb

from sagestack.algorithms.errors import UserError
from sagestack.algorithms.xgboost import metrics
from sagestack.algorithms.xgboost.custom_metrics import CLASSIFICATION, make_custom_metric, split_metrics
from sagestack.algorithms.xgboost.trainer import plan_metrics


def test_every_metric_has_a_train_and_a_validation_definition() -> None:
    definitions = metrics.metric_definitions()
    names = [d["Name"] for d in definitions]
    assert len(names) == len(set(names)) == 2 * len(metrics.ALL_METRICS)
    assert {"train:rmse", "validation:rmse", "validation:auc", "validation:r2", "train:aft-nloglik"} <= set(names)
    by_name = {d["Name"]: d["Regex"] for d in definitions}
    # the exact regex SageMaker injects for its built-in image
    number = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
    assert by_name["validation:rmse"] == r".*\[[0-9]+\].*#011validation-rmse:" + number + ".*"


def test_definitions_pick_their_value_out_of_a_round_line() -> None:
    line = "[41]#011train-error:0.10079#011train-merror:0.20000#011validation-error:0.10528#011validation-auc:0.93"
    found = {}
    for definition in metrics.metric_definitions():
        match = re.match(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    assert found == {"train:error": 0.10079, "train:merror": 0.2, "validation:error": 0.10528, "validation:auc": 0.93}
    assert not re.match(metrics.metric_regex("validation", "rmse"), "[3]#011validation-rmse:nan")


def test_tuning_objectives_and_directions() -> None:
    objectives = metrics.tuning_objective_metrics()
    assert objectives["validation:auc"] == "Maximize"
    assert objectives["validation:rmse"] == "Minimize"
    assert objectives["validation:interval-regression-accuracy"] == "Minimize"  # as SageMaker lists it
    assert all(name.startswith("validation:") for name in objectives)


def test_the_tuning_objective_joins_eval_metric_and_drives_early_stopping() -> None:
    plan = plan_metrics({"eval_metric": ["logloss", "error"], "_tuning_objective_metric": "validation:accuracy",
                         "early_stopping_rounds": 5}, has_validation=True)
    assert (plan.native, plan.custom) == (["error", "logloss"], ["accuracy"])
    assert (plan.early_stopping_metric, plan.maximize) == ("accuracy", True)
    plan = plan_metrics({"eval_metric": ["auc", "ndcg@5"], "early_stopping_rounds": 5}, has_validation=True)
    assert (plan.early_stopping_metric, plan.maximize) == ("ndcg@5", True)
    # early stopping needs validation data and a named metric
    assert plan_metrics({"eval_metric": ["rmse"], "early_stopping_rounds": 5}, False).early_stopping_metric is None
    assert plan_metrics({"early_stopping_rounds": 5}, True).early_stopping_metric is None
    assert plan_metrics({}, True) == plan_metrics({"early_stopping_rounds": 3}, False)


def test_split_metrics_keeps_rmse_and_mae_native() -> None:
    assert split_metrics(["rmse", "mae", "mse", "r2", "auc", "f1"]) == (["rmse", "mae", "auc"], ["mse", "r2", "f1"])


def _scores(names: list[str], objective: str, num_class: int | None, predt: np.ndarray, y: np.ndarray) -> dict:
    metric = make_custom_metric(names, objective, num_class)
    return dict(metric(predt, xgb.DMatrix(np.zeros((y.size, 1)), label=y)))


def test_binary_scores_match_scikit_learn() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 400).astype(np.float32)
    p = rng.random(400).astype(np.float32)
    got = _scores([*CLASSIFICATION, "mse", "r2"], "binary:logistic", None, p, y)
    c = (p > 0.5).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(y, c),
        "balanced_accuracy": skm.balanced_accuracy_score(y, c),
        "f1": skm.f1_score(y, c, average="macro"),
        "f1_binary": skm.f1_score(y, c),
        "f1_macro": skm.f1_score(y, c, average="macro"),
        "precision": skm.precision_score(y, c),
        "precision_macro": skm.precision_score(y, c, average="macro"),
        "precision_micro": skm.precision_score(y, c, average="micro"),
        "recall": skm.recall_score(y, c),
        "recall_macro": skm.recall_score(y, c, average="macro"),
        "recall_micro": skm.recall_score(y, c, average="micro"),
        "mse": skm.mean_squared_error(y, p),
        "r2": skm.r2_score(y, p),
    }
    assert got == pytest.approx(expected, abs=1e-6)


def test_multiclass_scores_match_scikit_learn_with_an_absent_class() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(8)
    y = rng.choice([0, 1, 3], 300).astype(np.float32)
    probabilities = rng.random((300, 4)).astype(np.float32)
    names = ["accuracy", "balanced_accuracy", "f1", "precision_macro", "recall_macro", "precision_micro"]
    got = _scores(names, "multi:softprob", 4, probabilities, y)
    c = probabilities.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "accuracy": skm.accuracy_score(y, c),
            "balanced_accuracy": skm.balanced_accuracy_score(y, c),
            "f1": skm.f1_score(y, c, average="macro"),
            "precision_macro": skm.precision_score(y, c, average="macro", zero_division=0),
            "recall_macro": skm.recall_score(y, c, average="macro", zero_division=0),
            "precision_micro": skm.precision_score(y, c, average="micro"),
        }
    assert got == pytest.approx(expected, abs=1e-6)
    # multi:softmax predicts class numbers directly
    assert _scores(["accuracy"], "multi:softmax", 4, c.astype(np.float32), y)["accuracy"] == pytest.approx(
        expected["accuracy"]
    )


def test_binary_only_metrics_refuse_multiclass_and_classes_need_integer_labels() -> None:
    with pytest.raises(UserError, match="with num_class=3 use f1_macro or f1_micro"):
        make_custom_metric(["f1_binary"], "multi:softmax", 3)
    with pytest.raises(UserError, match=r"needs class labels 0\.\.1"):
        _scores(["accuracy"], "reg:squarederror", None, np.array([0.2, 0.7]), np.array([0.5, 2.0]))
