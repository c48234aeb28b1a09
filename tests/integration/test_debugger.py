"""Debugger and profiler through the real API: rules reach verdicts, reports exist and render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sagestack.testing.server_process import ServerProcess
from tests.integration.browser import render
from tests.integration.test_sdk_workflow import sdk_env  # noqa: F401  (fixture)
from tests.integration.training_support import (
    adult_bucket,
    channel,
    execution_role,
    training_request,
    unique,
    wait_for_job,
)

RULES_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"


def _rule(name: str) -> dict[str, Any]:
    return {"RuleConfigurationName": name, "RuleEvaluatorImage": RULES_IMAGE,
            "RuleParameters": {"rule_to_invoke": name}}


@pytest.fixture(scope="module")
def data(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    info = adult_bucket(server, tmp_path_factory.mktemp("adult-debug"))
    info["role"] = execution_role(server)
    return info


def _debug_job(server: ServerProcess, data: dict[str, Any], hyperparameters: dict[str, str],
               rules: list[str]) -> dict[str, Any]:
    sm = server.client("sagemaker")
    name = unique("dbg")
    bucket = data["bucket"]
    request = training_request(
        name, data["role"], bucket,
        [channel("train", data["uris"]["train"]), channel("validation", data["uris"]["validation"])],
        hyperparameters,
        DebugHookConfig={"S3OutputPath": f"s3://{bucket}/debug", "CollectionConfigurations": [
            {"CollectionName": "metrics", "CollectionParameters": {"save_interval": "5"}},
            {"CollectionName": "feature_importance", "CollectionParameters": {"save_interval": "5"}},
            {"CollectionName": "predictions", "CollectionParameters": {"save_interval": "5"}},
            {"CollectionName": "labels", "CollectionParameters": {"save_interval": "5"}},
        ]},
        DebugRuleConfigurations=[_rule(r) for r in rules],
        ProfilerConfig={"S3OutputPath": f"s3://{bucket}/profiler", "ProfilingIntervalInMilliseconds": 500},
    )
    sm.create_training_job(**request)
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    return job


def _verdicts(job: dict[str, Any]) -> dict[str, str]:
    return {s["RuleConfigurationName"]: s["RuleEvaluationStatus"] for s in job.get("DebugRuleEvaluationStatuses", [])}


def test_healthy_tutorial_job_has_no_issues(server: ServerProcess, data: dict[str, Any]) -> None:
    hps = {"max_depth": "5", "eta": "0.2", "gamma": "4", "min_child_weight": "6", "subsample": "0.8",
           "objective": "binary:logistic", "num_round": "30"}
    job = _debug_job(server, data, hps, ["LossNotDecreasing", "Overfit"])
    assert _verdicts(job) == {"LossNotDecreasing": "NoIssuesFound", "Overfit": "NoIssuesFound"}
    keys = [o["Key"] for o in server.client("s3").list_objects_v2(
        Bucket=data["bucket"], Prefix=f"profiler/{job['TrainingJobName']}/profiler-output/system/")["Contents"]]
    assert any("/incremental/" in k and k.endswith(".algo-1.json") for k in keys), keys[:5]


def test_overfitting_job_trips_overfit(server: ServerProcess, data: dict[str, Any]) -> None:
    hps = {"max_depth": "12", "eta": "1", "min_child_weight": "0", "gamma": "0", "objective": "binary:logistic",
           "num_round": "40"}
    job = _debug_job(server, data, hps, ["Overfit"])
    assert _verdicts(job) == {"Overfit": "IssuesFound"}


def test_flat_loss_trips_loss_not_decreasing(server: ServerProcess, data: dict[str, Any]) -> None:
    hps = {"max_depth": "3", "eta": "0.00001", "objective": "binary:logistic", "num_round": "30"}
    job = _debug_job(server, data, hps, ["LossNotDecreasing"])
    assert _verdicts(job) == {"LossNotDecreasing": "IssuesFound"}


def test_sdk_rules_and_reports_render(server: ServerProcess, sdk_env: dict[str, Any],  # noqa: F811
                                      tmp_path: Path) -> None:
    import sagemaker
    from sagemaker import image_uris
    from sagemaker.debugger import ProfilerRule, Rule, rule_configs
    from sagemaker.inputs import TrainingInput

    session = sagemaker.Session()
    bucket = session.default_bucket()
    estimator = sagemaker.estimator.Estimator(
        image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1"), sdk_env["role"],
        instance_count=1, instance_type="ml.m4.xlarge", output_path=f"s3://{bucket}/output",
        sagemaker_session=session,
        rules=[ProfilerRule.sagemaker(rule_configs.ProfilerReport()),
               Rule.sagemaker(rule_configs.create_xgboost_report()),
               Rule.sagemaker(rule_configs.loss_not_decreasing()),
               Rule.sagemaker(rule_configs.overfit())],
    )
    estimator.set_hyperparameters(max_depth=5, eta=0.2, gamma=4, min_child_weight=6, subsample=0.8,
                                  objective="binary:logistic", num_round=30)
    estimator.fit({"train": TrainingInput(sdk_env["uris"]["train"], content_type="csv"),
                   "validation": TrainingInput(sdk_env["uris"]["validation"], content_type="csv")}, logs=False)
    summary = estimator.latest_training_job.rule_job_summary()
    terminal = {"NoIssuesFound", "IssuesFound", "Error"}
    assert summary and all(s["RuleEvaluationStatus"] in terminal for s in summary), summary
    job_name = estimator.latest_training_job.name
    s3 = server.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"output/{job_name}/rule-output/")["Contents"]]
    profiler_report = next(k for k in keys if k.endswith("profiler-output/profiler-report.html"))
    xgboost_report = next(k for k in keys if k.endswith("xgboost_report.html"))
    assert profiler_report.split("/")[3].startswith("ProfilerReport")
    for key in (profiler_report, xgboost_report):
        local = tmp_path / Path(key).name
        s3.download_file(bucket, key, str(local))
        html = local.read_text()
        assert "<script src=\"http" not in html  # self-contained: opens offline
        page = render(local)
        assert page.dom.count("main-svg") >= 2, f"{key}: plots did not render"
        assert not page.js_errors, page.js_errors
