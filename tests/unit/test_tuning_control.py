"""The tuning controller's pure parts: trial requests, names, views and counters."""

from __future__ import annotations

import re
from typing import Any

from sagestack.db.models.training import TrainingJob
from sagestack.db.models.tuning import TuningTrial
from sagestack.logic.sagemaker import tuning as control

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def request(**definition: Any) -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": "tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1",
                                                            "MaxValue": "5"}]},
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::1:role/r",
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            "StaticHyperParameters": {"num_round": "10"},
            **definition,
        },
    }


def test_trial_request_from_a_tuning_resource_config() -> None:
    tuning = request(HyperParameterTuningResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                                         "VolumeSizeInGB": 5},
                     EnableNetworkIsolation=True, Environment={"A": "1"})
    params = control.trial_request(tuning, "tune-001-abcdef12", {"num_round": "10", "max_depth": "3"},
                                   [{"Key": "k", "Value": "v"}])
    assert params["TrainingJobName"] == "tune-001-abcdef12"
    assert params["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5}
    assert params["HyperParameters"] == {"num_round": "10", "max_depth": "3"}
    assert params["EnableNetworkIsolation"] is True and params["Environment"] == {"A": "1"}
    assert params["Tags"] == [{"Key": "k", "Value": "v"}]
    assert "MetricDefinitions" not in params["AlgorithmSpecification"]  # the built-in ones are filled in later


def test_resource_config_from_instance_configs() -> None:
    definition = {"HyperParameterTuningResourceConfig": {
        "InstanceConfigs": [{"InstanceType": "ml.c5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 8}]}}
    assert control.resource_config(definition) == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2,
                                                   "VolumeSizeInGB": 8}
    assert control.resource_config({"ResourceConfig": {"InstanceCount": 1}}) == {"InstanceCount": 1}


def test_own_metric_definitions_keep_the_objective_parsed() -> None:
    own = [{"Name": "train:custom", "Regex": "custom=([0-9.]+)"}]
    spec = {"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": own}
    params = control.trial_request(request(ResourceConfig={"InstanceCount": 1}, AlgorithmSpecification=spec),
                                   "t", {}, [])
    names = [d["Name"] for d in params["AlgorithmSpecification"]["MetricDefinitions"]]
    assert names == ["train:custom", "validation:auc"]


def test_trial_names_carry_the_one_based_index() -> None:
    assert re.fullmatch(r"tune-007-[0-9a-f]{8}", control.trial_name("tune", 6))
    assert control.trial_name("tune", 6) != control.trial_name("tune", 6)


def _view(index: int, attempt: int, status: str | None, reason: str | None = None,
          auc: float | None = None) -> control.TrialView:
    row = TuningTrial(training_job_name=f"tune-{index + 1:03d}-{attempt:08x}", tuning_job_name="tune",
                      trial_index=index, attempt=attempt, hyperparameters={"max_depth": "2"}, intermediate=[])
    job = None
    if status is not None:
        job = TrainingJob(name=row.training_job_name, status=status, failure_reason=reason,
                          final_metrics={} if auc is None else {"validation:auc": [auc, 0.0]})
    return control.TrialView(row, job, "validation:auc")


def test_counters_and_latest_attempts() -> None:
    views = [
        _view(0, 1, "Completed", auc=0.9),
        _view(1, 1, "Failed", "InternalServerError: the sagestack server restarted"),
        _view(1, 2, "InProgress"),
        _view(2, 1, "Failed", "ClientError: bad hyperparameter"),
        _view(3, 1, "Stopped", "Training job stopped by early stopping", auc=0.8),
        _view(4, 1, None),
    ]
    assert control.status_counters(views) == {"Completed": 1, "InProgress": 2, "RetryableError": 1,
                                              "NonRetryableError": 1, "Stopped": 1}
    assert control.objective_counters(views) == {"Succeeded": 2, "Pending": 2, "Failed": 2}
    latest = control.latest(views)
    assert [(v.index, v.row.attempt) for v in latest] == [(0, 1), (1, 2), (2, 1), (3, 1), (4, 1)]
    assert [v.record().status for v in latest] == ["Completed", "InProgress", "Failed", "Stopped", "Pending"]
    assert latest[3].record().ranked and latest[3].objective == 0.8


def test_live_curve_wins_while_running() -> None:
    view = _view(0, 1, "InProgress")
    view.row.intermediate = [0.5]
    view.live_curve = [0.5, 0.6, 0.7]
    assert view.curve == [0.5, 0.6, 0.7] and view.objective == 0.7
