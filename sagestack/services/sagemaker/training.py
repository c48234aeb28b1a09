"""Training jobs: Create, Describe, List, Stop, Update. The runner lives in control/training.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from sagestack.algorithms.catalog import resolve_image
from sagestack.aws.errors import AwsError
from sagestack.control.training import next_transitions
from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import could_not_find, name_filter, page, sort_items, time_filters
from sagestack.services.sagemaker.tags import put_tags

TERMINAL = ("Completed", "Failed", "Stopped")


def _validate_request(params: dict[str, Any]) -> None:
    spec = params["AlgorithmSpecification"]
    image = spec.get("TrainingImage")
    if not image:
        raise AwsError("ValidationException",
                       "AlgorithmSpecification.TrainingImage is required: sagestack runs built-in images only "
                       "(AlgorithmName and marketplace algorithms are not supported).", 400)
    if resolve_image(image) is None:
        raise AwsError("ValidationException",
                       f"The training image {image} cannot be run by sagestack: it runs the built-in XGBoost "
                       "images (.../sagemaker-xgboost:<version> and .../xgboost:<tag>).", 400)
    modes = {spec.get("TrainingInputMode", "File")}
    modes |= {c.get("InputMode") for c in params.get("InputDataConfig", []) if c.get("InputMode")}
    if "Pipe" in modes:
        raise AwsError("ValidationException",
                       "TrainingInputMode Pipe is not supported by sagestack; use File or FastFile.", 400)
    names = [c["ChannelName"] for c in params.get("InputDataConfig", [])]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AwsError("ValidationException", f"Channel names must be unique; duplicated: {duplicates}.", 400)
    for channel in params.get("InputDataConfig", []):
        source = channel["DataSource"]
        if "S3DataSource" not in source:
            raise AwsError("ValidationException",
                           f"Channel {channel['ChannelName']}: only S3DataSource is supported.", 400)
    resources = params["ResourceConfig"]
    if resources.get("InstanceGroups"):
        raise AwsError("ValidationException", "Heterogeneous clusters (InstanceGroups) are not supported.", 400)
    if not resources.get("InstanceCount"):
        raise AwsError("ValidationException", "ResourceConfig.InstanceCount is required.", 400)


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


def checked_training_request(platform: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The request with SageMaker's defaults filled in, or the AwsError CreateTrainingJob would raise."""
    _validate_request(params)
    request = _with_defaults(params)
    platform.training.check_inputs(request)
    return request


def create_training_job_from_request(platform: Any, params: dict[str, Any], tuning_job_name: str | None = None,
                                     region: str | None = None) -> str:
    """Create and submit a training job; returns its ARN. Tuning jobs launch their trials through here."""
    name = params["TrainingJobName"]
    arn = f"arn:aws:sagemaker:{region or platform.region}:{platform.account_id}:training-job/{name.lower()}"
    request = checked_training_request(platform, params)
    request.pop("_TuningJobName", None)
    now = utcnow()
    with platform.db.transaction() as session:
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
            debug_rule_statuses=_initial_rule_statuses(request.get("DebugRuleConfigurations"), now),
            profiler_rule_statuses=_initial_rule_statuses(request.get("ProfilerRuleConfigurations"), now),
            tuning_job_name=tuning_job_name,
        ))
        put_tags(session, arn, params.get("Tags", []))
    platform.training.submit(name)
    return arn


@operation("sagemaker")
def create_training_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    arn = create_training_job_from_request(ctx.platform, params, params.get("_TuningJobName"), ctx.region)
    return {"TrainingJobArn": arn}


def _initial_rule_statuses(configs: list[dict[str, Any]] | None, now: datetime) -> list[dict[str, Any]]:
    return [{"RuleConfigurationName": c["RuleConfigurationName"], "RuleEvaluationStatus": "InProgress",
             "LastModifiedTime": now.timestamp()} for c in configs or []]


def _load(session: Any, name: str) -> TrainingJob:
    job = session.get(TrainingJob, name)
    if job is None:
        raise could_not_find("training job", name)
    return job


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def describe(job: TrainingJob) -> dict[str, Any]:
    request = job.request
    result: dict[str, Any] = {
        key: value for key, value in request.items()
        if key not in ("TrainingJobName", "Tags", "_TuningJobName")
    }
    result.update({
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "TrainingJobStatus": job.status,
        "SecondaryStatus": job.secondary_status,
        "CreationTime": job.created,
        "LastModifiedTime": job.last_modified,
        "SecondaryStatusTransitions": [
            {**t, "StartTime": _ts(t["StartTime"]), "EndTime": _ts(t.get("EndTime"))} for t in job.transitions
        ],
    })
    if job.failure_reason:
        result["FailureReason"] = job.failure_reason
    if job.training_start is not None:
        result["TrainingStartTime"] = job.training_start
    if job.training_end is not None:
        result["TrainingEndTime"] = job.training_end
        seconds = max(1, round((job.training_end - (job.training_start or job.created)).total_seconds()))
        result["TrainingTimeInSeconds"] = seconds
        result["BillableTimeInSeconds"] = seconds * job.instance_count
    if job.status == "Completed" and job.model_artifacts:
        result["ModelArtifacts"] = {"S3ModelArtifacts": job.model_artifacts}
    if job.final_metrics:
        result["FinalMetricDataList"] = [
            {"MetricName": name, "Value": value, "Timestamp": _ts(when)}
            for name, (value, when) in sorted(job.final_metrics.items())
        ]
    if job.debug_rule_statuses:
        result["DebugRuleEvaluationStatuses"] = _rule_statuses(job.debug_rule_statuses)
    if job.profiler_rule_statuses:
        result["ProfilerRuleEvaluationStatuses"] = _rule_statuses(job.profiler_rule_statuses)
    if job.profiling_status:
        result["ProfilingStatus"] = job.profiling_status
    if job.tuning_job_name:
        arn_prefix = job.arn.split(":training-job/")[0]
        result["TuningJobArn"] = f"{arn_prefix}:hyper-parameter-tuning-job/{job.tuning_job_name.lower()}"
    return result


def _rule_statuses(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "LastModifiedTime": _ts(s.get("LastModifiedTime"))} for s in statuses]


@operation("sagemaker")
def describe_training_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        return describe(_load(session, params["TrainingJobName"]))


def summary(job: TrainingJob) -> dict[str, Any]:
    item: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "CreationTime": job.created,
        "LastModifiedTime": job.last_modified,
        "TrainingJobStatus": job.status,
        "SecondaryStatus": job.secondary_status,
    }
    if job.training_end is not None:
        item["TrainingEndTime"] = job.training_end
    return item


@operation("sagemaker")
def list_training_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    query = select(TrainingJob)
    if params.get("StatusEquals"):
        query = query.where(TrainingJob.status == params["StatusEquals"])
    with ctx.platform.db.session() as session:
        jobs = list(session.scalars(query))
    keep_time = time_filters(params, lambda j: j.created, lambda j: j.last_modified)
    keep_name = name_filter(params, lambda j: j.name)
    jobs = [j for j in jobs if keep_time(j) and keep_name(j)]
    jobs = sort_items(jobs, params, {"CreationTime": lambda j: j.created, "Name": lambda j: j.name,
                                     "Status": lambda j: j.status})
    chunk, token = page(jobs, params)
    result: dict[str, Any] = {"TrainingJobSummaries": [summary(j) for j in chunk]}
    if token:
        result["NextToken"] = token
    return result


@operation("sagemaker")
def stop_training_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TrainingJobName"]
    with ctx.platform.db.transaction() as session:
        job = _load(session, name)
        if job.status != "InProgress":
            raise AwsError("ValidationException",
                           f"The request was rejected because the training job is in status {job.status}.", 400)
        now = utcnow()
        job.stop_requested = True
        job.status = "Stopping"
        job.secondary_status = "Stopping"
        job.transitions = next_transitions(job.transitions, "Stopping", "Stopping the training job", now)
        job.last_modified = now
    ctx.platform.training.stop(name)
    return {}


@operation("sagemaker")
def update_training_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TrainingJobName"]
    with ctx.platform.db.transaction() as session:
        job = _load(session, name)
        if job.status in TERMINAL and "ResourceConfig" not in params:
            raise AwsError("ValidationException",
                           f"The training job {name} is in status {job.status} and cannot be updated.", 400)
        request = copy.deepcopy(job.request)
        if "ProfilerConfig" in params:
            profiler = {**request.get("ProfilerConfig", {}), **params["ProfilerConfig"]}
            request["ProfilerConfig"] = profiler
            job.profiling_status = "Disabled" if profiler.get("DisableProfiler") else "Enabled"
        if "ProfilerRuleConfigurations" in params:
            request["ProfilerRuleConfigurations"] = (
                request.get("ProfilerRuleConfigurations", []) + params["ProfilerRuleConfigurations"]
            )
            job.profiler_rule_statuses = job.profiler_rule_statuses + _initial_rule_statuses(
                params["ProfilerRuleConfigurations"], utcnow())
        if "ResourceConfig" in params:
            request["ResourceConfig"] = {**request["ResourceConfig"], **params["ResourceConfig"]}
        job.request = request
        job.last_modified = utcnow()
        return {"TrainingJobArn": job.arn}
