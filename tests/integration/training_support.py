"""Helpers shared by the training, tuning and serving tests: data in a bucket, jobs, waiting."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import xgboost as xgb

from sagestack.sdk_config import sdk_config_yaml
from sagestack.testing import roles
from sagestack.testing.server_process import ServerProcess
from tests.unit.adult_prep import prepare

ADULT_GZ = Path(__file__).resolve().parents[2] / "examples" / "adult-xgboost" / "data" / "adult.data.gz"
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TUTORIAL_HYPERPARAMETERS = {
    "max_depth": "5", "eta": "0.2", "gamma": "4", "min_child_weight": "6", "subsample": "0.8",
    "objective": "binary:logistic", "num_round": "100",
}
TRUST = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"Service":"sagemaker.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def adult_bucket(server: ServerProcess, workdir: Path) -> dict[str, Any]:
    """Prepare the Adult splits, upload them to a fresh bucket; return paths and S3 URIs."""
    local = prepare(ADULT_GZ, workdir)
    s3 = server.client("s3")
    bucket = unique("adult")
    s3.create_bucket(Bucket=bucket)
    uris = {}
    for channel, path in local.items():
        key = f"data/{channel}/{path.name}"
        s3.upload_file(str(path), bucket, key)
        uris[channel] = f"s3://{bucket}/data/{channel}"
    return {"bucket": bucket, "local": local, "uris": uris}


def execution_role(server: ServerProcess, buckets: list[str] | None = None) -> str:
    """A role as the console makes it: AmazonSageMakerFullAccess and S3 access to ``buckets`` (None: any)."""
    return roles.execution_role(server.client("iam"), buckets)


def channel(name: str, uri: str, content_type: str = "text/csv", **s3: Any) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "ContentType": content_type,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, **s3}},
    }


def training_request(name: str, role: str, bucket: str, channels: list[dict[str, Any]],
                     hyperparameters: dict[str, str] | None = None, instance_count: int = 1,
                     **extra: Any) -> dict[str, Any]:
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": role,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m4.xlarge", "InstanceCount": instance_count, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "HyperParameters": TUTORIAL_HYPERPARAMETERS if hyperparameters is None else hyperparameters,
    }
    request.update(extra)
    return request


def point_sdk_at(server: ServerProcess, bucket: str, workdir: Path, monkeypatch: Any) -> None:
    """What a notebook instance provides the SDK: endpoint variables, credentials, telemetry off, a bucket."""
    config = workdir / "sagemaker-config.yaml"
    config.write_text(sdk_config_yaml(bucket))
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


def load_model(server: ServerProcess, uri: str) -> xgb.Booster:
    """The booster inside a job's model.tar.gz, loaded locally with xgboost."""
    bucket, key = uri[5:].split("/", 1)
    raw = server.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        names = archive.getnames()
        assert "xgboost-model" in names, names
        model = archive.extractfile("xgboost-model").read()
    booster = xgb.Booster()
    booster.load_model(bytearray(model))
    return booster


def wait_for_job(sm: Any, name: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = sm.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"training job {name} still {job['TrainingJobStatus']} after {timeout}s")
