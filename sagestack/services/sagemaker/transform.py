"""Batch transform jobs: Create, Describe, List, Stop. The runner lives in control/transform.py."""

from __future__ import annotations

import copy
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.hosting import Model
from sagestack.db.models.transform import TransformJob
from sagestack.logic.tags import put_tags
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import (
    check_stoppable,
    list_result,
    load_row,
    resource_arn,
    rows_with_status,
)

SUPPORTED_SPLITS = ("None", "Line")


def _with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    request = copy.deepcopy(params)
    request.pop("Tags", None)
    transform_input = request["TransformInput"]
    transform_input.setdefault("SplitType", "None")
    transform_input.setdefault("CompressionType", "None")
    transform_input["DataSource"]["S3DataSource"].setdefault("S3DataType", "S3Prefix")
    request["TransformOutput"].setdefault("AssembleWith", "None")
    request.setdefault("MaxPayloadInMB", 6)
    request.setdefault("BatchStrategy", "MultiRecord" if transform_input["SplitType"] != "None" else "SingleRecord")
    request.setdefault("MaxConcurrentTransforms", request["TransformResources"]["InstanceCount"])
    return request


def _validate(session: Any, ctx: RequestContext, request: dict[str, Any]) -> None:
    if session.get(Model, request["ModelName"]) is None:
        arn = resource_arn(ctx, "model", request["ModelName"])
        raise AwsError("ValidationException", f'Could not find model "{arn}".', 400)
    split = request["TransformInput"]["SplitType"]
    if split not in SUPPORTED_SPLITS:
        raise AwsError("ValidationException", f"SplitType {split} is not supported by sagestack; use None or Line.",
                       400)
    if request["TransformInput"]["CompressionType"] not in ("None", "Gzip"):
        raise AwsError("ValidationException", "CompressionType must be None or Gzip.", 400)
    if request["MaxPayloadInMB"] > 100:
        raise AwsError("ValidationException", "MaxPayloadInMB must be at most 100.", 400)


@operation("sagemaker")
def create_transform_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TransformJobName"]
    arn = resource_arn(ctx, "transform-job", name)
    request = _with_defaults(params)
    controller = ctx.platform.transform
    now = utcnow()
    with ctx.platform.db.transaction() as session:
        if session.get(TransformJob, name) is not None:
            raise AwsError("ResourceInUse", f"Job name must be unique within an AWS account and region, and a job "
                                            f"with this name already exists ({arn})", 400)
        _validate(session, ctx, request)
        controller.check_inputs(request)
        session.add(TransformJob(name=name, arn=arn, request=request, created=now, last_modified=now))
        put_tags(session, arn, params.get("Tags", []))
    controller.submit(name)
    return {"TransformJobArn": arn}


def _load(session: Any, name: str) -> TransformJob:
    return load_row(session, TransformJob, name, "transform job")


@operation("sagemaker")
def describe_transform_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        job = _load(session, params["TransformJobName"])
        result = {k: v for k, v in job.request.items() if k != "TransformJobName"}
        result.update({"TransformJobName": job.name, "TransformJobArn": job.arn, "TransformJobStatus": job.status,
                       "CreationTime": job.created})
        for key, value in (("FailureReason", job.failure_reason), ("TransformStartTime", job.started),
                           ("TransformEndTime", job.ended)):
            if value is not None:
                result[key] = value
        return result


@operation("sagemaker")
def list_transform_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        jobs = rows_with_status(session, TransformJob, params)
    return list_result(jobs, params, "TransformJobSummaries", lambda j: {
        "TransformJobName": j.name, "TransformJobArn": j.arn, "CreationTime": j.created,
        "LastModifiedTime": j.last_modified, "TransformJobStatus": j.status,
        **({"TransformEndTime": j.ended} if j.ended else {}),
        **({"FailureReason": j.failure_reason} if j.failure_reason else {})})


@operation("sagemaker")
def stop_transform_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TransformJobName"]
    with ctx.platform.db.transaction() as session:
        job = _load(session, name)
        check_stoppable("transform job", job.status)
        job.stop_requested = True
        job.status = "Stopping"
        job.last_modified = utcnow()
    ctx.platform.transform.stop(name)
    return {}
