"""Training jobs' state: a checked request with SageMaker's defaults, the new job row, status transitions.

CreateTrainingJob and the tuning controller (which launches its trials as ordinary
training jobs) both create jobs through :func:`create_training_job`.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Protocol

from sagestack.algorithms.catalog import resolve_image
from sagestack.arns import sagemaker_arn
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.logic import tags

KIND = "training-job"


def _invalid(message: str) -> AwsError:
    return AwsError("ValidationException", message, 400)


def _validate_request(params: dict[str, Any]) -> None:
    spec = params["AlgorithmSpecification"]
    image = spec.get("TrainingImage")
    if not image:
        raise _invalid("AlgorithmSpecification.TrainingImage is required: sagestack runs built-in images only "
                       "(AlgorithmName and marketplace algorithms are not supported).")
    if resolve_image(image) is None:
        raise _invalid(f"The training image {image} cannot be run by sagestack: it runs the built-in XGBoost "
                       "images (.../sagemaker-xgboost:<version> and .../xgboost:<tag>).")
    modes = {spec.get("TrainingInputMode", "File")}
    modes |= {c.get("InputMode") for c in params.get("InputDataConfig", []) if c.get("InputMode")}
    if "Pipe" in modes:
        raise _invalid("TrainingInputMode Pipe is not supported by sagestack; use File or FastFile.")
    names = [c["ChannelName"] for c in params.get("InputDataConfig", [])]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _invalid(f"Channel names must be unique; duplicated: {duplicates}.")
    for channel in params.get("InputDataConfig", []):
        source = channel["DataSource"]
        if "S3DataSource" not in source:
            raise _invalid(f"Channel {channel['ChannelName']}: only S3DataSource is supported.")
    resources = params["ResourceConfig"]
    if resources.get("InstanceGroups"):
        raise _invalid("Heterogeneous clusters (InstanceGroups) are not supported.")
    if not resources.get("InstanceCount"):
        raise _invalid("ResourceConfig.InstanceCount is required.")


def _with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """Fill the members SageMaker fills, so Describe reads like AWS (the SDK hard-indexes some)."""
    request = copy.deepcopy(params)
    request.pop("Tags", None)
    request.setdefault("HyperParameters", {})
    spec = request["AlgorithmSpecification"]
    spec.setdefault("TrainingInputMode", "File")
    algorithm = resolve_image(spec["TrainingImage"])
    if algorithm is not None and "MetricDefinitions" not in spec:
        spec["MetricDefinitions"] = algorithm.metric_definitions()
    spec.setdefault("EnableSageMakerMetricsTimeSeries", False)
    for channel in request.get("InputDataConfig", []):
        s3 = channel["DataSource"]["S3DataSource"]
        s3.setdefault("S3DataDistributionType", "FullyReplicated")
        channel.setdefault("CompressionType", "None")
        channel.setdefault("RecordWrapperType", "None")
    output = request["OutputDataConfig"]
    output.setdefault("KmsKeyId", "")
    output.setdefault("CompressionType", "GZIP")
    request["ResourceConfig"].setdefault("VolumeSizeInGB", 30)
    request.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
    request["StoppingCondition"].setdefault("MaxRuntimeInSeconds", 86400)
    for flag in ("EnableNetworkIsolation", "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining"):
        request.setdefault(flag, False)
    return request


class TrainingQueue(Protocol):
    """What job creation needs of the training runner (``Platform.training``)."""

    def check_inputs(self, request: dict[str, Any]) -> None: ...
    def submit(self, name: str) -> None: ...


def checked_training_request(runner: TrainingQueue, params: dict[str, Any]) -> dict[str, Any]:
    """The request with SageMaker's defaults filled in, or the AwsError CreateTrainingJob would raise."""
    _validate_request(params)
    request = _with_defaults(params)
    runner.check_inputs(request)
    return request


def initial_rule_statuses(configs: list[dict[str, Any]] | None, now: datetime) -> list[dict[str, Any]]:
    return [{"RuleConfigurationName": c["RuleConfigurationName"], "RuleEvaluationStatus": "InProgress",
             "LastModifiedTime": now.timestamp()} for c in configs or []]


def next_transitions(transitions: list[dict[str, Any]], status: str, message: str, now: datetime,
                     end: bool = False) -> list[dict[str, Any]]:
    """SecondaryStatusTransitions with the open entry ended at ``now`` and ``status`` appended.

    Returns a new list: JSON columns only notice assignment, not in-place changes.
    """
    out = [dict(t) for t in transitions]
    if out and out[-1].get("EndTime") is None:
        out[-1]["EndTime"] = now.timestamp()
    item: dict[str, Any] = {"Status": status, "StartTime": now.timestamp(), "StatusMessage": message}
    if end:
        item["EndTime"] = now.timestamp()
    return [*out, item]


def create_training_job(db: Database, account_id: str, runner: TrainingQueue, params: dict[str, Any],
                        region: str, tuning_job_name: str | None = None) -> str:
    """Create and submit a training job (of ``tuning_job_name`` for a trial); returns its ARN."""
    name = params["TrainingJobName"]
    arn = sagemaker_arn(region, account_id, KIND, name)
    request = checked_training_request(runner, params)
    now = utcnow()
    with db.transaction() as session:
        if session.get(TrainingJob, name) is not None:
            raise AwsError(
                "ResourceInUse",
                "Training job names must be unique within an AWS account and region, and a training job "
                f"with this name already exists ({arn})",
                400,
            )
        profiler = request.get("ProfilerConfig")
        session.add(TrainingJob(
            name=name, arn=arn, request=request, status="InProgress", secondary_status="Starting",
            transitions=next_transitions([], "Starting", "Launching requested ML instances", now),
            created=now, last_modified=now, instance_count=request["ResourceConfig"]["InstanceCount"],
            profiling_status=None if profiler is None else
            ("Disabled" if profiler.get("DisableProfiler") else "Enabled"),
            debug_rule_statuses=initial_rule_statuses(request.get("DebugRuleConfigurations"), now),
            profiler_rule_statuses=initial_rule_statuses(request.get("ProfilerRuleConfigurations"), now),
            tuning_job_name=tuning_job_name,
        ))
        tags.put_tags(session, arn, params.get("Tags", []))
    runner.submit(name)
    return arn


def request_stop(job: TrainingJob, reason: str, now: datetime) -> None:
    """Mark a running job Stopping (the runner then stops its instances)."""
    job.stop_requested = True
    job.status = job.secondary_status = "Stopping"
    job.transitions = next_transitions(job.transitions, "Stopping", reason, now)
    job.last_modified = now
