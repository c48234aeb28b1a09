"""Hyperparameter tuning jobs over real sockets: strategies, stopping, warm start, failures, restart, SDK v2."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.training_support import (
    XGBOOST_IMAGE,
    adult_bucket,
    channel,
    execution_role,
    point_sdk_at,
    unique,
)

TERMINAL = ("Completed", "Failed", "Stopped")
FAST = {"objective": "binary:logistic", "num_round": "10"}
RANGES = {
    "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.05", "MaxValue": "1", "ScalingType": "Auto"}],
    "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "6", "ScalingType": "Auto"}],
}


@pytest.fixture(scope="module")
def data(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    info = adult_bucket(server, tmp_path_factory.mktemp("adult"))
    info["role"] = execution_role(server)
    return info


def tuning_request(name: str, data: dict[str, Any], *, strategy: str = "Random", max_jobs: int | None = 3,
                   parallel: int = 2, ranges: dict[str, Any] | None = None, static: dict[str, str] | None = None,
                   **config: Any) -> dict[str, Any]:
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": parallel}
    if max_jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = max_jobs
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": limits,
            "ParameterRanges": copy.deepcopy(RANGES if ranges is None else ranges),
            **config,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": data["role"],
            "InputDataConfig": [channel("train", data["uris"]["train"]),
                                channel("validation", data["uris"]["validation"])],
            "OutputDataConfig": {"S3OutputPath": f"s3://{data['bucket']}/tuning"},
            "HyperParameterTuningResourceConfig": {"InstanceType": "ml.m4.xlarge", "InstanceCount": 1,
                                                   "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            "StaticHyperParameters": dict(FAST if static is None else static),
        },
    }


def wait_for_tuning(sm: Any, name: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if job["HyperParameterTuningJobStatus"] in TERMINAL:
            return job
        time.sleep(0.3)
    raise TimeoutError(f"tuning job {name} still {job['HyperParameterTuningJobStatus']} after {timeout}s")


def trials(sm: Any, name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every training job of a tuning job, following NextToken."""
    out: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, **kwargs,
                                                                    **token)
        out += page["TrainingJobSummaries"]
        if "NextToken" not in page:
            return out
        token = {"NextToken": page["NextToken"]}


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def _objective(summary: dict[str, Any]) -> float:
    return summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]


# ---------------------------------------------------------------- strategies


def test_random_search_reproducible_with_every_field_and_paging(server: ServerProcess,
                                                                 data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    names = [unique("rand"), unique("rand")]
    tags = [{"Key": "team", "Value": "ml"}]
    for name in names:  # both run at once: same seed, same suggestions
        arn = sm.create_hyper_parameter_tuning_job(**tuning_request(name, data, RandomSeed=11), Tags=tags)[
            "HyperParameterTuningJobArn"]
        assert arn.endswith(f":hyper-parameter-tuning-job/{name}")
    jobs = [wait_for_tuning(sm, name) for name in names]
    job = jobs[0]
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameterTuningJobConfig"]["RandomSeed"] == 11
    assert job["HyperParameterTuningJobConfig"]["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 3,
                                                                      "MaxParallelTrainingJobs": 2}
    assert job["TrainingJobDefinition"]["StaticHyperParameters"] == FAST
    assert job["TrainingJobStatusCounters"] == {"Completed": 3, "InProgress": 0, "RetryableError": 0,
                                                "NonRetryableError": 0, "Stopped": 0}
    assert job["ObjectiveStatusCounters"] == {"Succeeded": 3, "Pending": 0, "Failed": 0}
    assert job["CreationTime"] <= job["HyperParameterTuningEndTime"] <= job["LastModifiedTime"]
    assert job["ConsumedResources"]["RuntimeInSeconds"] >= 1
    assert "NumberOfTrainingJobsObjectiveNotImproving" in job["TuningJobCompletionDetails"]
    assert "FailureReason" not in job and "OverallBestTrainingJob" not in job

    listed = [trials(sm, name, MaxResults=2) for name in names]
    assert [len(x) for x in listed] == [3, 3]
    tuned = [[t["TunedHyperParameters"] for t in x] for x in listed]  # Name order = suggestion order
    assert tuned[0] == tuned[1]
    assert set(tuned[0][0]) == {"eta", "max_depth"}
    for index, summary in enumerate(listed[0]):
        assert re.fullmatch(rf"{names[0]}-{index + 1:03d}-[0-9a-f]{{8}}", summary["TrainingJobName"])
        assert summary["TrainingJobStatus"] == "Completed" and summary["ObjectiveStatus"] == "Succeeded"
        assert summary["TuningJobName"] == names[0]
        assert summary["TrainingStartTime"] <= summary["TrainingEndTime"]
        assert summary["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "validation:auc"
    best = max(listed[0], key=_objective)
    assert job["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]
    assert job["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "Type": "Maximize", "MetricName": "validation:auc", "Value": _objective(best)}

    # A trial is an ordinary training job that knows its tuning job, with the objective passed in.
    trial = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    assert trial["TuningJobArn"] == jobs[0]["HyperParameterTuningJobArn"]
    assert trial["HyperParameters"] == {**FAST, **best["TunedHyperParameters"],
                                        "_tuning_objective_metric": "validation:auc"}
    assert trial["ResourceConfig"]["InstanceType"] == "ml.m4.xlarge"
    last_auc = [m["Value"] for m in trial["FinalMetricDataList"] if m["MetricName"] == "validation:auc"]
    assert last_auc == [_objective(best)]
    assert sm.list_tags(ResourceArn=trial["TrainingJobArn"])["Tags"] == tags
    assert sm.list_tags(ResourceArn=jobs[0]["HyperParameterTuningJobArn"])["Tags"] == tags

    # Paging: no NextToken on the last page; sorting and filters.
    first = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=names[0],
                                                                 MaxResults=2)
    assert len(first["TrainingJobSummaries"]) == 2 and "NextToken" in first
    last = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=names[0],
                                                                MaxResults=2, NextToken=first["NextToken"])
    assert len(last["TrainingJobSummaries"]) == 1 and "NextToken" not in last
    ranked = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=names[0], SortBy="FinalObjectiveMetricValue", SortOrder="Descending")
    values = [_objective(t) for t in ranked["TrainingJobSummaries"]]
    assert values == sorted(values, reverse=True) and len(values) == 3
    assert trials(sm, names[0], StatusEquals="Failed") == []

    found = sm.list_hyper_parameter_tuning_jobs(NameContains=names[0][-10:])["HyperParameterTuningJobSummaries"]
    assert [j["HyperParameterTuningJobName"] for j in found] == [names[0]]
    assert found[0]["Strategy"] == "Random" and found[0]["TrainingJobStatusCounters"]["Completed"] == 3
    assert found[0]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 3
    both = sm.list_hyper_parameter_tuning_jobs(NameContains="rand-", MaxResults=1, SortBy="Name")
    assert len(both["HyperParameterTuningJobSummaries"]) == 1 and "NextToken" in both
    assert sm.list_hyper_parameter_tuning_jobs(StatusEquals="Stopping")["HyperParameterTuningJobSummaries"] == []


def test_bayesian_search_with_own_metric_definitions(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("bayes")
    request = tuning_request(name, data, strategy="Bayesian", max_jobs=4,
                             static={**FAST, "eval_metric": "auc"})
    # A definition that declares the objective itself: no _tuning_objective_metric is passed.
    request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = "my-auc"
    request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "my-auc", "Regex": r".*\[[0-9]+\].*#011validation-auc:([0-9.]+)"}]
    sm.create_hyper_parameter_tuning_job(**request)
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TrainingJobStatusCounters"]["Completed"] == 4
    listed = trials(sm, name)
    assert len({tuple(sorted(t["TunedHyperParameters"].items())) for t in listed}) == 4
    assert job["BestTrainingJob"]["TrainingJobName"] == max(listed, key=_objective)["TrainingJobName"]
    assert job["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "my-auc"
    trial = sm.describe_training_job(TrainingJobName=listed[0]["TrainingJobName"])
    assert "_tuning_objective_metric" not in trial["HyperParameters"]
    assert [m["MetricName"] for m in trial["FinalMetricDataList"]] == ["my-auc"]


def test_grid_infers_the_job_count(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("grid")
    grid = {"CategoricalParameterRanges": [{"Name": "max_depth", "Values": ["2", "4"]},
                                           {"Name": "eta", "Values": ["0.1", "0.5"]}]}
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, data, strategy="Grid", max_jobs=None, ranges=grid))
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4
    combos = sorted((t["TunedHyperParameters"]["max_depth"], t["TunedHyperParameters"]["eta"])
                    for t in trials(sm, name))
    assert combos == [("2", "0.1"), ("2", "0.5"), ("4", "0.1"), ("4", "0.5")]


def test_hyperband_caps_rounds_at_max_resource(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("hyperband")
    request = tuning_request(name, data, strategy="Hyperband", max_jobs=5, RandomSeed=2,
                             static={"objective": "binary:logistic", "num_round": "200"},
                             StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 3, "MaxResource": 27}})
    sm.create_hyper_parameter_tuning_job(**request)
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameterTuningJobConfig"]["StrategyConfig"] == request["HyperParameterTuningJobConfig"][
        "StrategyConfig"]
    listed = trials(sm, name)
    assert len(listed) == 5 and all(t["ObjectiveStatus"] == "Succeeded" for t in listed)
    counters = job["TrainingJobStatusCounters"]
    assert counters["Completed"] + counters["Stopped"] == 5
    for summary in listed:
        trial = sm.describe_training_job(TrainingJobName=summary["TrainingJobName"])
        assert trial["HyperParameters"]["num_round"] == "27"  # no job trains past MaxResource


# ---------------------------------------------------------------- stopping and completion


def test_early_stopping_auto_stops_poor_trials(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("early")
    ranges = {"ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.001", "MaxValue": "0.5",
                                             "ScalingType": "Logarithmic"}],
              "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "4"}]}
    request = tuning_request(name, data, max_jobs=10, ranges=ranges, RandomSeed=5,
                             TrainingJobEarlyStoppingType="Auto",
                             static={"objective": "binary:logistic", "num_round": "200"})
    sm.create_hyper_parameter_tuning_job(**request)
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] == "Auto"
    stopped = trials(sm, name, StatusEquals="Stopped")
    assert stopped, "no trial was stopped early"
    assert job["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    assert job["TrainingJobStatusCounters"]["Completed"] + len(stopped) == 10
    for summary in stopped:
        assert "stopped by early stopping" in summary["FailureReason"]
        assert summary["ObjectiveStatus"] == "Succeeded"  # a stopped job still reports its last value
        trial = sm.describe_training_job(TrainingJobName=summary["TrainingJobName"])
        assert "stopped by early stopping" in trial["SecondaryStatusTransitions"][-1]["StatusMessage"]
        rounds = [m for m in trial["FinalMetricDataList"] if m["MetricName"] == "validation:auc"]
        assert rounds, trial["FinalMetricDataList"]
    assert job["BestTrainingJob"]["ObjectiveStatus"] == "Succeeded"


def test_target_objective_completes_early_with_training_job_definitions(server: ServerProcess,
                                                                        data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("target")
    request = tuning_request(name, data, max_jobs=10,
                             TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 0.8})
    # The TrainingJobDefinitions form: objective and ranges move into the (single) definition.
    config = request["HyperParameterTuningJobConfig"]
    definition = request.pop("TrainingJobDefinition")
    definition.update(DefinitionName="main", TuningObjective=config.pop("HyperParameterTuningJobObjective"),
                      HyperParameterRanges=config.pop("ParameterRanges"))
    request["TrainingJobDefinitions"] = [definition]
    sm.create_hyper_parameter_tuning_job(**request)
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TrainingJobDefinitions"][0]["DefinitionName"] == "main" and "TrainingJobDefinition" not in job
    listed = trials(sm, name)
    assert 1 <= len(listed) <= 3  # the first results reach the target: no more are launched
    assert all(t["TrainingJobDefinitionName"] == "main" for t in listed)
    assert _objective(job["BestTrainingJob"]) >= 0.8
    assert job["HyperParameterTuningJobConfig"]["TuningJobCompletionCriteria"] == {"TargetObjectiveMetricValue": 0.8}


def test_stop_stops_running_trials(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("stop")
    sm.create_hyper_parameter_tuning_job(**tuning_request(
        name, data, max_jobs=10, static={"objective": "binary:logistic", "num_round": "3000"}))
    deadline = time.monotonic() + 60
    while not trials(sm, name, StatusEquals="InProgress") and time.monotonic() < deadline:
        time.sleep(0.2)
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "HyperParameterTuningJobStatus"] in ("Stopping", "Stopped")
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Stopped"
    listed = trials(sm, name)
    assert listed and all(t["TrainingJobStatus"] == "Stopped" for t in listed)
    assert "was stopped" in listed[0]["FailureReason"]
    assert job["TrainingJobStatusCounters"]["Stopped"] == len(listed) < 10
    with pytest.raises(ClientError) as excinfo:
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert _error(excinfo)[0] == "ValidationException"


# ---------------------------------------------------------------- warm start


def test_warm_start_from_a_parent(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    parent, child = unique("parent"), unique("child")
    sm.create_hyper_parameter_tuning_job(**tuning_request(parent, data, max_jobs=3, RandomSeed=1))
    assert wait_for_tuning(sm, parent)["HyperParameterTuningJobStatus"] == "Completed"
    warm = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent}],
            "WarmStartType": "IdenticalDataAndAlgorithm"}
    sm.create_hyper_parameter_tuning_job(**tuning_request(child, data, strategy="Bayesian", max_jobs=2),
                                         WarmStartConfig=warm)
    job = wait_for_tuning(sm, child)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["WarmStartConfig"] == warm
    assert job["TrainingJobStatusCounters"]["Completed"] == 2  # the parent's jobs are not relaunched
    everything = trials(sm, parent) + trials(sm, child)
    overall = job["OverallBestTrainingJob"]
    assert overall["TrainingJobName"] == max(everything, key=_objective)["TrainingJobName"]
    assert _objective(overall) >= _objective(job["BestTrainingJob"])
    assert overall["TuningJobName"] in (parent, child)

    with pytest.raises(ClientError) as excinfo:
        sm.create_hyper_parameter_tuning_job(**tuning_request(unique("orphan"), data), WarmStartConfig={
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "no-such-job"}],
            "WarmStartType": "TransferLearning"})
    code, message = _error(excinfo)
    assert code == "ValidationException" and "no-such-job" in message


# ---------------------------------------------------------------- failures


def test_invalid_requests_are_refused(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")

    def refused(request: dict[str, Any]) -> str:
        with pytest.raises(ClientError) as excinfo:
            sm.create_hyper_parameter_tuning_job(**request)
        code, message = _error(excinfo)
        assert code == "ValidationException", message
        return message

    bad = tuning_request(unique("bad"), data)
    bad["HyperParameterTuningJobConfig"]["ParameterRanges"]["ContinuousParameterRanges"][0].update(
        MinValue="2", MaxValue="1")
    assert "eta" in refused(bad)
    grid = tuning_request(unique("bad"), data, strategy="Grid", max_jobs=None)
    assert "Categorical" in refused(grid)
    wrong_count = tuning_request(unique("bad"), data, strategy="Grid", max_jobs=3, ranges={
        "CategoricalParameterRanges": [{"Name": "max_depth", "Values": ["2", "4"]}]})
    assert "(2)" in refused(wrong_count)
    hyperband = tuning_request(unique("bad"), data, strategy="Hyperband", TrainingJobEarlyStoppingType="Auto",
                               StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}})
    assert "Hyperband" in refused(hyperband)
    metric = tuning_request(unique("bad"), data)
    metric["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = "validation:nope"
    assert "validation:nope" in refused(metric)
    both = tuning_request(unique("bad"), data, static={**FAST, "eta": "0.3"})
    assert "both static and tunable" in refused(both)
    no_data = tuning_request(unique("bad"), data)
    no_data["TrainingJobDefinition"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = (
        "s3://no-such-bucket-here/train")
    with pytest.raises(ClientError):
        sm.create_hyper_parameter_tuning_job(**no_data)
    with pytest.raises(ClientError) as excinfo:
        sm.create_hyper_parameter_tuning_job(**tuning_request("x" * 33, data))
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="no-such-tuning-job")
    assert _error(excinfo)[0] == "ValidationException"

    name = unique("dup")
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, data, max_jobs=1, parallel=1))
    with pytest.raises(ClientError) as excinfo:
        sm.create_hyper_parameter_tuning_job(**tuning_request(name, data, max_jobs=1, parallel=1))
    assert _error(excinfo)[0] == "ResourceInUse"
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert wait_for_tuning(sm, name)["HyperParameterTuningJobStatus"] in ("Stopped", "Completed")


def test_failing_trials_fail_the_job_with_the_reason(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("failing")
    request = tuning_request(name, data, max_jobs=6, static={"objective": "binary:nonsense", "num_round": "5"})
    sm.create_hyper_parameter_tuning_job(**request)
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Failed"
    assert "binary:nonsense" in job["FailureReason"] and "failed" in job["FailureReason"]
    counters = job["TrainingJobStatusCounters"]
    assert counters["NonRetryableError"] >= 3 and counters["Completed"] == 0
    assert counters["NonRetryableError"] + counters["Stopped"] < 6  # gave up before the budget
    assert job["ObjectiveStatusCounters"]["Failed"] >= 3
    assert "BestTrainingJob" not in job


def test_one_failing_trial_among_good_ones(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("onebad")
    grid = {"CategoricalParameterRanges": [{"Name": "tree_method", "Values": ["hist", "nonsense"]}]}
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, data, strategy="Grid", max_jobs=None,
                                                          ranges=grid))
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    assert job["TrainingJobStatusCounters"]["Completed"] == 1
    assert job["ObjectiveStatusCounters"] == {"Succeeded": 1, "Pending": 0, "Failed": 1}
    assert job["BestTrainingJob"]["TunedHyperParameters"] == {"tree_method": "hist"}
    failed = trials(sm, name, StatusEquals="Failed")
    assert len(failed) == 1 and "nonsense" in failed[0]["FailureReason"]
    assert failed[0]["ObjectiveStatus"] == "Failed"


# ---------------------------------------------------------------- restart


def test_tuning_job_survives_a_server_kill(fresh_server: ServerProcess, tmp_path: Path) -> None:
    fresh_server.start()
    info = adult_bucket(fresh_server, tmp_path / "adult")
    info["role"] = execution_role(fresh_server)
    sm = fresh_server.client("sagemaker")
    name = unique("restart")
    sm.create_hyper_parameter_tuning_job(**tuning_request(
        name, info, max_jobs=4, RandomSeed=4, static={"objective": "binary:logistic", "num_round": "300"}))
    deadline = time.monotonic() + 60
    while len(trials(sm, name, StatusEquals="InProgress")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    suggested = {t["TrainingJobName"][:-9]: t["TunedHyperParameters"] for t in trials(sm, name)}
    fresh_server.kill()
    fresh_server.start()
    sm = fresh_server.client("sagemaker")
    job = wait_for_tuning(sm, name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    listed = trials(sm, name)
    names = [t["TrainingJobName"] for t in listed]
    assert len(names) == len(set(names))
    lost = [t for t in listed if t["TrainingJobStatus"] == "Failed"]
    assert len(lost) >= 2 and all("InternalServerError" in t["FailureReason"] for t in lost)
    assert job["TrainingJobStatusCounters"] == {"Completed": 4, "InProgress": 0, "RetryableError": len(lost),
                                                "NonRetryableError": 0, "Stopped": 0}
    completed = {t["TrainingJobName"][:-9]: t["TunedHyperParameters"] for t in listed
                 if t["TrainingJobStatus"] == "Completed"}
    assert sorted(completed) == [f"{name}-{i:03d}" for i in range(1, 5)]  # every suggestion has a result
    for prefix, tuned in suggested.items():
        assert completed[prefix] == tuned  # relaunched with the same hyperparameters


# ---------------------------------------------------------------- SDK v2


@pytest.fixture
def sdk_env(server: ServerProcess, data: dict[str, Any], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    point_sdk_at(server, data["bucket"], tmp_path, monkeypatch)
    return data


def test_sdk_v2_hyperparameter_tuner(server: ServerProcess, sdk_env: dict[str, Any]) -> None:
    sagemaker = pytest.importorskip("sagemaker")
    from sagemaker.inputs import TrainingInput
    from sagemaker.serializers import CSVSerializer
    from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter

    session = sagemaker.Session()
    bucket = session.default_bucket()
    container = sagemaker.image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
    estimator = sagemaker.estimator.Estimator(container, sdk_env["role"], instance_count=1,
                                              instance_type="ml.m4.xlarge", output_path=f"s3://{bucket}/output",
                                              sagemaker_session=session)
    estimator.set_hyperparameters(eval_metric="auc", objective="binary:logistic", num_round=20)
    ranges = {"eta": ContinuousParameter(0, 1), "min_child_weight": ContinuousParameter(1, 10),
              "alpha": ContinuousParameter(0, 2), "max_depth": IntegerParameter(1, 10)}
    tuner = HyperparameterTuner(estimator, "validation:auc", ranges, max_jobs=20, max_parallel_jobs=2)
    tuner.fit({"train": TrainingInput(sdk_env["uris"]["train"], content_type="csv"),
               "validation": TrainingInput(sdk_env["uris"]["validation"], content_type="csv")})

    sm = server.client("sagemaker")
    name = tuner.latest_tuning_job.name
    job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TrainingJobStatusCounters"]["Completed"] == 20
    best = tuner.best_training_job()
    assert best == job["BestTrainingJob"]["TrainingJobName"]
    frame = tuner.analytics().dataframe()
    assert len(frame) == 20
    assert {"eta", "min_child_weight", "alpha", "max_depth", "FinalObjectiveValue",
            "TrainingElapsedTimeSeconds"} <= set(frame.columns)
    assert frame["FinalObjectiveValue"].max() == pytest.approx(_objective(job["BestTrainingJob"]))
    assert frame["FinalObjectiveValue"].max() > 0.9

    predictor = tuner.deploy(initial_instance_count=1, instance_type="ml.m4.xlarge", serializer=CSVSerializer())
    try:
        table = np.loadtxt(sdk_env["local"]["test"], delimiter=",", dtype=np.float32)
        body = predictor.predict(table[:200, 1:]).decode("utf-8")
        scores = np.array([float(v) for v in body.replace(",", "\n").split()])
        assert len(scores) == 200 and ((scores > 0.5) == (table[:200, 0] > 0.5)).mean() > 0.8
        described = sm.describe_endpoint(EndpointName=predictor.endpoint_name)
        assert described["EndpointStatus"] == "InService"
    finally:
        predictor.delete_model()
        predictor.delete_endpoint(delete_endpoint_config=True)
