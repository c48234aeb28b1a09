"""Training jobs with boto3 over real sockets: states, fields, logs, metrics, every failure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.training_support import (
    adult_bucket,
    channel,
    execution_role,
    load_model,
    training_request,
    unique,
    wait_for_job,
)

FAST = {"objective": "binary:logistic", "num_round": "10", "max_depth": "3"}


@pytest.fixture(scope="module")
def data(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    info = adult_bucket(server, tmp_path_factory.mktemp("adult"))
    info["role"] = execution_role(server)
    return info


def _channels(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [channel("train", data["uris"]["train"]), channel("validation", data["uris"]["validation"])]


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    err = excinfo.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"]["Message"]


def _accuracy(booster: xgb.Booster, test_csv: Path) -> float:
    table = np.loadtxt(test_csv, delimiter=",", dtype=np.float32)
    predictions = booster.inplace_predict(table[:, 1:])
    return float(((predictions > 0.5) == (table[:, 0] > 0.5)).mean())


def test_tutorial_job_completes_with_every_field(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("tutorial")
    arn = sm.create_training_job(**training_request(name, data["role"], data["bucket"], _channels(data)))[
        "TrainingJobArn"]
    assert arn.endswith(f":training-job/{name}")
    early = sm.describe_training_job(TrainingJobName=name)
    assert early["TrainingJobStatus"] == "InProgress"
    assert "ModelArtifacts" not in early
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["SecondaryStatus"] == "Completed"
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all(t["StatusMessage"] for t in job["SecondaryStatusTransitions"])
    assert job["OutputDataConfig"]["KmsKeyId"] == ""
    assert job["ResourceConfig"]["InstanceCount"] == 1
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 600
    assert job["EnableNetworkIsolation"] is False
    assert job["TrainingTimeInSeconds"] >= 1 and job["BillableTimeInSeconds"] >= 1
    assert job["TrainingStartTime"] <= job["TrainingEndTime"]
    uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{data['bucket']}/output/{name}/output/model.tar.gz"
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    # binary:logistic evaluates logloss by default (xgboost >= 1.4, as in the 1.7-1 image).
    assert 0 < metrics["validation:logloss"] < 0.35 and 0 < metrics["train:logloss"] < 0.35, metrics
    assert _accuracy(load_model(server, uri), data["local"]["test"]) >= 0.86


def test_logs_stream_per_instance(server: ServerProcess, data: dict[str, Any]) -> None:
    sm, logs = server.client("sagemaker"), server.client("logs")
    name = unique("logs")
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], _channels(data), FAST))
    assert wait_for_job(sm, name)["TrainingJobStatus"] == "Completed"
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/",
                                        orderBy="LogStreamName")
    assert "nextToken" not in streams
    [stream] = streams["logStreams"]
    assert stream["logStreamName"].startswith(f"{name}/algo-1-")
    page = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"],
                               startFromHead=True)
    lines = [e["message"] for e in page["events"]]
    assert any(line.startswith("[9]#011train-") for line in lines), lines[-5:]
    again = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"],
                                nextToken=page["nextForwardToken"], startFromHead=True)
    assert again["events"] == [] and again["nextForwardToken"]


def test_metrics_in_cloudwatch(server: ServerProcess, data: dict[str, Any]) -> None:
    sm, cw = server.client("sagemaker"), server.client("cloudwatch")
    name = unique("metrics")
    hps = {**FAST, "eval_metric": "auc"}
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], _channels(data), hps))
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    stats = cw.get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs", MetricName="validation:auc",
        Dimensions=[{"Name": "TrainingJobName", "Value": name}],
        StartTime=job["TrainingStartTime"], EndTime=job["TrainingEndTime"].timestamp() + 60,
        Period=60, Statistics=["Average"],
    )
    assert stats["Datapoints"] and 0.8 < stats["Datapoints"][0]["Average"] <= 1
    listed = cw.list_metrics(Namespace="/aws/sagemaker/TrainingJobs",
                             Dimensions=[{"Name": "TrainingJobName", "Value": name}])
    assert {"train:auc", "validation:auc"} <= {m["MetricName"] for m in listed["Metrics"]}


def test_distributed_training_two_instances(server: ServerProcess, data: dict[str, Any]) -> None:
    sm, logs = server.client("sagemaker"), server.client("logs")
    name = unique("dist")
    channels = [channel("train", data["uris"]["train"], S3DataDistributionType="FullyReplicated"),
                channel("validation", data["uris"]["validation"])]
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], channels, instance_count=2))
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["BillableTimeInSeconds"] == 2 * job["TrainingTimeInSeconds"]
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")
    assert len(streams["logStreams"]) == 2
    booster = load_model(server, job["ModelArtifacts"]["S3ModelArtifacts"])
    assert _accuracy(booster, data["local"]["test"]) >= 0.86


def _failed(server: ServerProcess, data: dict[str, Any], hyperparameters: dict[str, str] | None = None,
            channels: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    sm = server.client("sagemaker")
    name = unique("fail")
    request = training_request(name, data["role"], data["bucket"], channels or _channels(data),
                               FAST if hyperparameters is None else hyperparameters, **extra)
    sm.create_training_job(**request)
    return wait_for_job(sm, name)


def test_bad_hyperparameter_fails_with_reason(server: ServerProcess, data: dict[str, Any]) -> None:
    job = _failed(server, data, {**FAST, "eta": "2.5"})
    assert job["TrainingJobStatus"] == "Failed"
    # The 1.x images report every algorithm-side failure as "AlgorithmError: ..." (see the contract, 1.4).
    assert "eta" in job["FailureReason"] and job["FailureReason"].startswith("AlgorithmError")
    assert "ModelArtifacts" not in job


def test_missing_num_round_fails(server: ServerProcess, data: dict[str, Any]) -> None:
    job = _failed(server, data, {"objective": "binary:logistic"})
    assert job["TrainingJobStatus"] == "Failed" and "num_round" in job["FailureReason"]


def test_missing_train_channel_fails(server: ServerProcess, data: dict[str, Any]) -> None:
    job = _failed(server, data, channels=[channel("validation", data["uris"]["validation"])])
    assert job["TrainingJobStatus"] == "Failed" and "train" in job["FailureReason"]


def test_extra_channel_fails(server: ServerProcess, data: dict[str, Any]) -> None:
    channels = [*_channels(data), channel("bogus", data["uris"]["test"])]
    job = _failed(server, data, channels=channels)
    assert job["TrainingJobStatus"] == "Failed" and "bogus" in job["FailureReason"]


def test_unreadable_data_names_file_and_line(server: ServerProcess, data: dict[str, Any]) -> None:
    s3 = server.client("s3")
    s3.put_object(Bucket=data["bucket"], Key="bad/train/broken.csv", Body=b"1,2,3\n0,4,5\n1,abc,6\n")
    job = _failed(server, data, channels=[channel("train", f"s3://{data['bucket']}/bad/train")])
    assert job["TrainingJobStatus"] == "Failed"
    assert "broken.csv" in job["FailureReason"], job["FailureReason"]


def test_empty_channel_refused_at_create(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    request = training_request(unique("empty"), data["role"], data["bucket"],
                               [channel("train", f"s3://{data['bucket']}/nothing-here")], FAST)
    with pytest.raises(ClientError) as excinfo:
        sm.create_training_job(**request)
    status, code, message = _error(excinfo)
    assert (status, code) == (400, "ValidationException") and "No S3 objects found" in message


def test_max_runtime_exceeded_stops_job(server: ServerProcess, data: dict[str, Any]) -> None:
    job = _failed(server, data, {**FAST, "num_round": "100000", "max_depth": "10", "eta": "0.01"},
                  StoppingCondition={"MaxRuntimeInSeconds": 1})
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "MaxRuntimeInSeconds" in job["FailureReason"]


def test_stop_training_job(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("stop")
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], _channels(data),
                                              {**FAST, "num_round": "100000", "eta": "0.01"}))
    deadline = time.monotonic() + 60
    while sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] != "Training":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    sm.stop_training_job(TrainingJobName=name)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in ("Stopping", "Stopped")
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as excinfo:
        sm.stop_training_job(TrainingJobName=name)
    assert _error(excinfo)[1] == "ValidationException"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"AlgorithmSpecification": {"TrainingImage": "123.dkr.ecr.us-east-1.amazonaws.com/my-algo:1",
                                     "TrainingInputMode": "File"}}, "cannot be run"),
        ({"AlgorithmSpecification": {"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/"
                                     "sagemaker-xgboost:1.7-1", "TrainingInputMode": "Pipe"}}, "Pipe"),
        ({"OutputDataConfig": {"S3OutputPath": "s3://no-such-bucket-anywhere/out"}}, "no-such-bucket"),
    ],
)
def test_create_refuses_bad_requests(server: ServerProcess, data: dict[str, Any], change: dict[str, Any],
                                     fragment: str) -> None:
    sm = server.client("sagemaker")
    request = training_request(unique("bad"), data["role"], data["bucket"], _channels(data), FAST)
    request.update(change)
    with pytest.raises(ClientError) as excinfo:
        sm.create_training_job(**request)
    status, code, message = _error(excinfo)
    assert (status, code) == (400, "ValidationException") and fragment in message


def test_duplicate_name_and_missing_job(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("dup")
    request = training_request(name, data["role"], data["bucket"], _channels(data), FAST)
    sm.create_training_job(**request)
    with pytest.raises(ClientError) as excinfo:
        sm.create_training_job(**request)
    assert _error(excinfo)[1] == "ResourceInUse"
    with pytest.raises(ClientError) as excinfo:
        sm.describe_training_job(TrainingJobName=unique("nope"))
    status, code, message = _error(excinfo)
    assert (status, code) == (400, "ValidationException") and message.startswith("Could not find")
    wait_for_job(sm, name)


def test_list_filters_sort_and_pages(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    tag = unique("listing")
    names = [f"{tag}-{i}" for i in range(3)]
    for name in names:
        sm.create_training_job(**training_request(name, data["role"], data["bucket"], _channels(data), FAST))
    for name in names:
        wait_for_job(sm, name)
    first = sm.list_training_jobs(NameContains=tag, SortBy="Name", SortOrder="Ascending", MaxResults=2)
    assert [s["TrainingJobName"] for s in first["TrainingJobSummaries"]] == names[:2]
    second = sm.list_training_jobs(NameContains=tag, SortBy="Name", SortOrder="Ascending", MaxResults=2,
                                   NextToken=first["NextToken"])
    assert [s["TrainingJobName"] for s in second["TrainingJobSummaries"]] == names[2:]
    assert "NextToken" not in second
    completed = sm.list_training_jobs(NameContains=tag, StatusEquals="Completed")["TrainingJobSummaries"]
    assert len(completed) == 3
    paginator = sm.get_paginator("list_training_jobs")
    seen = [s["TrainingJobName"] for p in paginator.paginate(NameContains=tag, PaginationConfig={"PageSize": 1})
            for s in p["TrainingJobSummaries"]]
    assert sorted(seen) == names


def test_tags_and_update(server: ServerProcess, data: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = unique("tags")
    arn = sm.create_training_job(**training_request(
        name, data["role"], data["bucket"], _channels(data), {**FAST, "num_round": "200"},
        Tags=[{"Key": "team", "Value": "ml"}],
        ProfilerConfig={"S3OutputPath": f"s3://{data['bucket']}/profiler", "DisableProfiler": False},
    ))["TrainingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "test"}])
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
    assert tags == {"team": "ml", "stage": "test"}
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert [t["Key"] for t in sm.list_tags(ResourceArn=arn)["Tags"]] == ["stage"]
    try:
        sm.update_training_job(TrainingJobName=name, ProfilerConfig={"DisableProfiler": True})
        assert sm.describe_training_job(TrainingJobName=name)["ProfilingStatus"] == "Disabled"
    except ClientError as exc:  # the job may already have finished: then the update is refused
        assert exc.response["Error"]["Code"] == "ValidationException"
    wait_for_job(sm, name)


def test_server_restart_ends_running_jobs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    fresh_server.start()
    data = adult_bucket(fresh_server, tmp_path / "adult")
    role = execution_role(fresh_server)
    sm = fresh_server.client("sagemaker")
    name = unique("restart")
    sm.create_training_job(**training_request(name, role, data["bucket"], _channels(data),
                                              {**FAST, "num_round": "100000", "eta": "0.01"}))
    deadline = time.monotonic() + 60
    while sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] != "Training":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    fresh_server.kill()
    fresh_server.start()
    job = fresh_server.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert job["TrainingJobStatus"] == "Failed"
    assert "restarted" in job["FailureReason"]


def test_instance_killed_like_out_of_memory(server: ServerProcess, data: dict[str, Any]) -> None:
    """The kernel's OOM killer ends a process with SIGKILL; the job says what most likely happened."""
    import os
    import signal

    import psutil

    sm = server.client("sagemaker")
    name = unique("oom")
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], _channels(data),
                                              {**FAST, "num_round": "100000", "eta": "0.01"}))
    deadline = time.monotonic() + 60
    victim = None
    assert server.proc is not None
    while victim is None and time.monotonic() < deadline:
        for process in psutil.Process(server.proc.pid).children(recursive=True):
            try:
                if process.cwd().endswith(f"/jobs/{name}/algo-1"):
                    victim = process.pid
            except psutil.Error:
                continue
        time.sleep(0.1)
    assert victim is not None
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("OutOfMemoryError"), job["FailureReason"]


def test_manifest_channel_sharded_over_two_instances(server: ServerProcess, data: dict[str, Any]) -> None:
    """ManifestFile input, ShardedByS3Key over 2 instances, FastFile read as File."""
    s3, sm = server.client("s3"), server.client("sagemaker")
    rows = Path(data["local"]["train"]).read_text().splitlines(keepends=True)
    half = len(rows) // 2
    for index, part in enumerate((rows[:half], rows[half:])):
        s3.put_object(Bucket=data["bucket"], Key=f"manifest/parts/part-{index}.csv", Body="".join(part).encode())
    manifest = [{"prefix": f"s3://{data['bucket']}/manifest/parts/"}, "part-0.csv", "part-1.csv"]
    s3.put_object(Bucket=data["bucket"], Key="manifest/train.manifest", Body=json.dumps(manifest).encode())
    train = channel("train", f"s3://{data['bucket']}/manifest/train.manifest", S3DataType="ManifestFile",
                    S3DataDistributionType="ShardedByS3Key")
    train["InputMode"] = "FastFile"
    name = unique("manifest")
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], [train], FAST, instance_count=2))
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    shards = [sorted(p.name for p in (server.data_dir / "jobs" / name / host / "input" / "data" / "train").iterdir())
              for host in ("algo-1", "algo-2")]
    assert shards == [["part-0.csv"], ["part-1.csv"]]
