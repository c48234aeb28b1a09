"""Hyperparameter validation of built-in XGBoost: SageMaker's order and message texts."""

from __future__ import annotations

import pytest

from sagestack.algorithms.errors import UserError
from sagestack.algorithms.xgboost import hyperparameters as hp


def error_of(raw: dict[str, str]) -> str:
    with pytest.raises(UserError) as caught:
        hp.validate(raw)
    return caught.value.message


def test_tutorial_hyperparameters_become_typed_values() -> None:
    raw = {"max_depth": "5", "eta": "0.2", "gamma": "4", "min_child_weight": "6", "subsample": "0.8",
           "objective": "binary:logistic", "num_round": "100"}
    typed = hp.validate(raw)
    assert typed == {"max_depth": 5, "eta": 0.2, "gamma": 4.0, "min_child_weight": 6.0, "subsample": 0.8,
                     "objective": "binary:logistic", "num_round": 100}
    assert hp.xgb_params(typed) == {k: v for k, v in typed.items() if k != "num_round"}


def test_aliases_are_renamed_and_no_defaults_are_added() -> None:
    typed = hp.validate({"num_round": "3", "learning_rate": "0.1", "reg_lambda": "2", "reg_alpha": "1",
                         "min_split_loss": "0.5"})
    assert typed == {"num_round": 3, "eta": 0.1, "lambda": 2.0, "alpha": 1.0, "gamma": 0.5}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "Missing required hyperparameter: num_round"),
        ({"eta": "x"}, "Missing required hyperparameter: num_round"),  # required is checked first
        ({"num_round": "1", "silent": "0"}, "Extraneous hyperparameter found: silent"),
        ({"num_round": "1", "single_precision_histogram": "true"},
         "Extraneous hyperparameter found: single_precision_histogram"),
        # parsing and unknown names are checked together, in the user's order
        ({"num_round": "1", "eta": "x", "silent": "0"},
         "Hyperparameter eta: could not parse value (caused by ValueError)"),
        ({"num_round": "5.0"}, "Hyperparameter num_round: could not parse value (caused by ValueError)"),
        ({"num_round": "0"}, "Hyperparameter num_round: 0 is not in [1, +inf)"),
        ({"num_round": "1", "eta": "1.5"}, "Hyperparameter eta: 1.5 is not in [0, 1]"),
        ({"num_round": "1", "subsample": "0"}, "Hyperparameter subsample: 0.0 is not in (0, 1]"),
        ({"num_round": "1", "tweedie_variance_power": "2"},
         "Hyperparameter tweedie_variance_power: 2.0 is not in (1, 2)"),
        ({"num_round": "1", "seed": "2147483647"},
         "Hyperparameter seed: 2147483647 is not in (-2147483648, 2147483647)"),
        ({"num_round": "1", "booster": "gbforest"},
         "Hyperparameter booster: gbforest is not in ['gbtree', 'gblinear', 'dart']"),
        ({"num_round": "1", "tree_method": "gpu"},
         "Hyperparameter tree_method: gpu is not in ['auto', 'exact', 'approx', 'hist', 'gpu_hist']"),
        ({"num_round": "1", "eval_metric": "rmse,bogus"},
         "Hyperparameter eval_metric: value ['rmse', 'bogus'] not in range"),
        ({"num_round": "1", "eval_metric": "auc@3"},
         "Metric 'auc@3' is not supported. Parameter 'eval_metric' with customized threshold should be one of these "
         "options: 'error', 'ndcg', 'map'."),
        ({"num_round": "1", "eval_metric": "error@high"}, "Threshold value 't' in 'error@t' expects float input."),
        ({"num_round": "1", "monotone_constraints": "(1,2)", "tree_method": "hist"},
         "Hyperparameter monotone_constraints: value (1, 2) not in range [-1, 0, 1]"),
        ({"num_round": "1", "interaction_constraints": "[[0, 1]]", "tree_method": "hist"},
         "Hyperparameter interaction_constraints: value [[0, 1]] not in range [1, +inf)"),
        ({"num_round": "1", "_tuning_objective_metric": "train:auc"},
         "Hyperparameter _tuning_objective_metric: train:auc is not in ['validation:accuracy'"),
        ({"num_round": "1", "objective": "multi:softprob"},
         "Require input for parameter 'num_class' for multi-classification"),
        ({"num_round": "1", "eval_metric": "auc", "objective": "reg:squarederror"},
         "Metric 'auc' can only be applied for classification and ranking problems."),
        # without an objective SageMaker crashes (KeyError); here xgboost's default objective is assumed
        ({"num_round": "1", "eval_metric": "auc"},
         "Metric 'auc' can only be applied for classification and ranking problems."),
        ({"num_round": "1", "eval_metric": "aft-nloglik", "objective": "binary:logistic"},
         "Metric 'aft-nloglik' can only be applied for 'survival:aft' objective."),
        ({"num_round": "1", "monotone_constraints": "(1,-1)"},
         "monotone_constraints can be used only when the tree_method parameter is set to either 'exact' or 'hist'."),
        ({"num_round": "1", "interaction_constraints": "[[1, 2]]", "tree_method": "auto"},
         "interaction_constraints can be used only when the tree_method parameter is set to either 'exact', 'hist' "
         "or 'approx'."),
        ({"num_round": "1", "booster": "gblinear", "updater": "grow_colmaker"},
         "Linear updater should be one of these options: 'shotgun', 'coord_descent'."),
        ({"num_round": "1", "updater": "grow_colmaker,grow_histmaker"}, "Only one tree grow plugin can be selected."),
        ({"num_round": "1", "process_type": "update", "updater": "grow_colmaker"},
         "process_type 'update' can only be used with updater 'refresh' and 'prune'"),
    ],
)
def test_bad_values_fail_with_sagemakers_message(raw: dict[str, str], message: str) -> None:
    assert error_of(raw).startswith(message)


def test_valid_values_at_the_edges_of_their_ranges() -> None:
    typed = hp.validate({
        "num_round": "1", "eta": "0", "subsample": "1", "max_depth": "0", "seed": "-2147483647",
        "eval_metric": "error@0.7,ndcg@5,auc", "objective": "rank:ndcg", "csv_weights": "1",
        "monotone_constraints": "(1,0,-1)", "tree_method": "exact", "_tuning_objective_metric": "validation:ndcg",
    })
    assert typed["eval_metric"] == ["error@0.7", "ndcg@5", "auc"]
    assert typed["monotone_constraints"] == (1, 0, -1)


def test_xgb_params_leave_out_container_parameters_and_translate_old_ones() -> None:
    typed = hp.validate({
        "num_round": "10", "early_stopping_rounds": "3", "csv_weights": "1", "eval_metric": "rmse",
        "objective": "reg:linear", "tree_method": "hist", "predictor": "cpu_predictor",
        "monotone_constraints": "(1,-1)", "updater": "grow_quantile_histmaker,prune",
        "save_model_on_termination": "true", "_tuning_objective_metric": "validation:rmse",
    })
    assert hp.xgb_params(typed) == {
        "objective": "reg:squarederror",
        "tree_method": "hist",
        "monotone_constraints": "(1,-1)",
        "updater": "grow_quantile_histmaker,prune",
    }
    # no GPU here: gpu_hist trains with hist on the CPU
    assert hp.xgb_params(hp.validate({"num_round": "1", "tree_method": "gpu_hist"})) == {"tree_method": "hist"}


def test_unsupported_features_are_user_errors() -> None:
    with pytest.raises(UserError, match="Dask training is only available"):
        hp.check_supported(hp.validate({"num_round": "1", "use_dask_gpu_training": "true"}))
    with pytest.raises(UserError, match="_kfold"):
        hp.check_supported(hp.validate({"num_round": "1", "_kfold": "3"}))


def test_the_table_covers_the_documented_hyperparameters() -> None:
    documented = {
        "num_round", "num_class", "objective", "eval_metric", "early_stopping_rounds", "csv_weights", "booster",
        "verbosity", "nthread", "eta", "gamma", "max_depth", "min_child_weight", "max_delta_step", "subsample",
        "colsample_bytree", "colsample_bylevel", "colsample_bynode", "lambda", "alpha", "tree_method",
        "sketch_eps", "scale_pos_weight", "updater", "dsplit", "refresh_leaf", "process_type", "grow_policy",
        "max_leaves", "max_bin", "predictor", "monotone_constraints", "interaction_constraints", "sample_type",
        "normalize_type", "rate_drop", "skip_drop", "one_drop", "lambda_bias", "tweedie_variance_power",
        "base_score", "seed", "num_parallel_tree", "save_model_on_termination", "aft_loss_distribution",
        "aft_loss_distribution_scale", "deterministic_histogram", "sampling_method", "prob_buffer_row",
        "use_dask_gpu_training", "_tuning_objective_metric", "_kfold", "_num_cv_round",
    }
    assert set(hp.HYPERPARAMETERS) == documented
    tunable = {h.name for h in hp.TABLE if h.tunable_range is not None}
    assert tunable == {"num_round", "eta", "gamma", "max_depth", "min_child_weight", "max_delta_step", "subsample",
                       "colsample_bytree", "colsample_bylevel", "colsample_bynode", "lambda", "alpha"}
