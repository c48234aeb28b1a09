"""Training jobs: Create, Describe, List, Stop, Update.

The job's state is in logic/sagemaker/training.py; the runner lives in control/training.py.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sagestack.arns import arn_account, arn_region, sagemaker_arn
from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.logic.sagemaker.statuses import TERMINAL
from sagestack.logic.sagemaker.training import create_training_job as create_job
from sagestack.logic.sagemaker.training import initial_rule_statuses, request_stop
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import (
    check_stoppable,
    list_result,
    load_row,
    require_assumable_role,
    rows_with_status,
)


@operation("sagemaker")
def create_training_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    require_assumable_role(ctx, params["RoleArn"])
    return {"TrainingJobArn": create_job(ctx.platform.db, ctx.account_id, ctx.platform.training, params, ctx.region)}


def _load(session: Any, name: str) -> TrainingJob:
    return load_row(session, TrainingJob, name, "training job")


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def describe(job: TrainingJob) -> dict[str, Any]:
    request = job.request
    result: dict[str, Any] = {
        key: value for key, value in request.items()
        if key not in ("TrainingJobName", "Tags")
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
        result["TuningJobArn"] = sagemaker_arn(arn_region(job.arn), arn_account(job.arn), "hyper-parameter-tuning-job",
                                               job.tuning_job_name)
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
    with ctx.platform.db.session() as session:
        jobs = rows_with_status(session, TrainingJob, params)
    return list_result(jobs, params, "TrainingJobSummaries", summary)


@operation("sagemaker")
def stop_training_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TrainingJobName"]
    with ctx.platform.db.transaction() as session:
        job = _load(session, name)
        check_stoppable("training job", job.status)
        request_stop(job, "Stopping the training job", utcnow())
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
            job.profiler_rule_statuses = job.profiler_rule_statuses + initial_rule_statuses(
                params["ProfilerRuleConfigurations"], utcnow())
        if "ResourceConfig" in params:
            request["ResourceConfig"] = {**request["ResourceConfig"], **params["ResourceConfig"]}
        job.request = request
        job.last_modified = utcnow()
        return {"TrainingJobArn": job.arn}
