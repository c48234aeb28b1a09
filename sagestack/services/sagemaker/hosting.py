"""Models, endpoint configurations and endpoints. Deployment lives in control/endpoints.py."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from sqlalchemy import select

from sagestack.algorithms.catalog import resolve_image
from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.hosting import Endpoint, EndpointConfig, Model
from sagestack.logic.sagemaker.endpoints import desired_variants
from sagestack.logic.tags import drop_tags, put_tags
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import (
    list_result,
    load_row,
    require_assumable_role,
    resource_arn,
    rows_with_status,
)

T = TypeVar("T")
_KINDS: dict[type, tuple[str, str]] = {
    Model: ("model", "model"),
    EndpointConfig: ("endpoint configuration", "endpoint-config"),
    Endpoint: ("endpoint", "endpoint"),
}


def _exists(kind: str, arn: str) -> AwsError:
    return AwsError("ValidationException", f'Cannot create already existing {kind} "{arn}".', 400)


#: Models and endpoint configs have neither a status nor a modification time of their own.
_HOSTING_SORT_KEYS: dict[str, Any] = {"CreationTime": lambda r: r.created, "Name": lambda r: r.name,
                                      "Status": lambda r: getattr(r, "status", "")}


def _listing(rows: list[Any], params: dict[str, Any], key: str, item: Any) -> dict[str, Any]:
    return list_result(rows, params, key, item, sort_keys=_HOSTING_SORT_KEYS,
                       modified=lambda r: getattr(r, "last_modified", r.created))


# ---------------------------------------------------------------- models


def _load(session: Any, ctx: RequestContext, table: type[T], name: str) -> T:
    """The row of a model, endpoint configuration or endpoint, or the SDK's "Could not find" error."""
    kind, arn_type = _KINDS[table]
    return load_row(session, table, name, kind, shown_as=resource_arn(ctx, arn_type, name))


def _model(session: Any, ctx: RequestContext, name: str) -> Model:
    return _load(session, ctx, Model, name)


def _config(session: Any, ctx: RequestContext, name: str) -> EndpointConfig:
    return _load(session, ctx, EndpointConfig, name)


def _endpoint(session: Any, ctx: RequestContext, name: str) -> Endpoint:
    return _load(session, ctx, Endpoint, name)


def _delete(ctx: RequestContext, table: type, name: str) -> None:
    with ctx.platform.db.transaction() as session:
        row = _load(session, ctx, table, name)
        drop_tags(session, row.arn)
        session.delete(row)


def _containers(params: dict[str, Any]) -> list[dict[str, Any]]:
    containers = ([params["PrimaryContainer"]] if params.get("PrimaryContainer") else []) + list(
        params.get("Containers") or [])
    if not containers:
        raise AwsError("ValidationException", "Either PrimaryContainer or Containers must be specified.", 400)
    return containers


@operation("sagemaker")
def create_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["ModelName"]
    arn = resource_arn(ctx, "model", name)
    if params.get("ExecutionRoleArn"):
        require_assumable_role(ctx, params["ExecutionRoleArn"])
    for container in _containers(params):
        image = container.get("Image", "")
        if resolve_image(image) is None:
            raise AwsError("ValidationException", f"The image {image} cannot be served by sagestack: it serves the "
                                                  "built-in XGBoost images (.../sagemaker-xgboost:<version>).", 400)
        if not container.get("ModelDataUrl") and not container.get("ModelDataSource"):
            raise AwsError("ValidationException", "ModelDataUrl is required for the built-in XGBoost image.", 400)
    request = copy.deepcopy(params)
    request.pop("Tags", None)
    with ctx.platform.db.transaction() as session:
        if session.get(Model, name) is not None:
            raise _exists("model", arn)
        session.add(Model(name=name, arn=arn, request=request, created=utcnow()))
        put_tags(session, arn, params.get("Tags", []))
    return {"ModelArn": arn}


@operation("sagemaker")
def describe_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        model = _model(session, ctx, params["ModelName"])
        result = {k: v for k, v in model.request.items() if k != "Tags"}
        result.update({"ModelArn": model.arn, "CreationTime": model.created})
        result.setdefault("EnableNetworkIsolation", False)
        return result


@operation("sagemaker")
def list_models(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        rows = list(session.scalars(select(Model)))
    return _listing(rows, params, "Models",
                    lambda m: {"ModelName": m.name, "ModelArn": m.arn, "CreationTime": m.created})


@operation("sagemaker")
def delete_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _delete(ctx, Model, params["ModelName"])
    return {}


# ---------------------------------------------------------------- endpoint configurations


@operation("sagemaker")
def create_endpoint_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointConfigName"]
    arn = resource_arn(ctx, "endpoint-config", name)
    request = copy.deepcopy(params)
    request.pop("Tags", None)
    names = [v["VariantName"] for v in request["ProductionVariants"]]
    if len(set(names)) != len(names):
        raise AwsError("ValidationException", f"VariantName must be unique within an endpoint config: {names}.", 400)
    with ctx.platform.db.transaction() as session:
        if session.get(EndpointConfig, name) is not None:
            raise _exists("endpoint configuration", arn)
        for variant in request["ProductionVariants"]:
            if variant.get("ServerlessConfig"):
                raise AwsError("ValidationException", "Serverless variants are not supported by sagestack.", 400)
            _model(session, ctx, variant["ModelName"])
            variant.setdefault("InitialVariantWeight", 1.0)
            variant.setdefault("InitialInstanceCount", 1)
        session.add(EndpointConfig(name=name, arn=arn, request=request, created=utcnow()))
        put_tags(session, arn, params.get("Tags", []))
    return {"EndpointConfigArn": arn}


@operation("sagemaker")
def describe_endpoint_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        config = _config(session, ctx, params["EndpointConfigName"])
        result = dict(config.request)
        result.update({"EndpointConfigArn": config.arn, "CreationTime": config.created})
        return result


@operation("sagemaker")
def list_endpoint_configs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        rows = list(session.scalars(select(EndpointConfig)))
    return _listing(rows, params, "EndpointConfigs", lambda c: {
        "EndpointConfigName": c.name, "EndpointConfigArn": c.arn, "CreationTime": c.created})


@operation("sagemaker")
def delete_endpoint_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _delete(ctx, EndpointConfig, params["EndpointConfigName"])
    return {}


# ---------------------------------------------------------------- endpoints


@operation("sagemaker")
def create_endpoint(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointName"]
    arn = resource_arn(ctx, "endpoint", name)
    now = utcnow()
    with ctx.platform.db.transaction() as session:
        if session.get(Endpoint, name) is not None:
            raise _exists("endpoint", arn)
        config = _config(session, ctx, params["EndpointConfigName"])
        session.add(Endpoint(name=name, arn=arn, config_name=config.name, status="Creating",
                             variants=desired_variants(config), created=now, last_modified=now))
        put_tags(session, arn, params.get("Tags", []))
    ctx.platform.endpoints.reconcile_soon(name)
    return {"EndpointArn": arn}


def _variant_view(variant: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    view = {k: v for k, v in variant.items() if k != "ModelName"}
    image = images.get(variant["ModelName"])
    if image:
        view["DeployedImages"] = [{"SpecifiedImage": image, "ResolvedImage": image}]
    return view


@operation("sagemaker")
def describe_endpoint(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        endpoint = _endpoint(session, ctx, params["EndpointName"])
        images = {m.name: (m.request.get("PrimaryContainer") or {}).get("Image", "")
                  for m in session.scalars(select(Model))}
        result: dict[str, Any] = {
            "EndpointName": endpoint.name,
            "EndpointArn": endpoint.arn,
            "EndpointConfigName": endpoint.config_name,
            "ProductionVariants": [_variant_view(v, images) for v in endpoint.variants],
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.created,
            "LastModifiedTime": endpoint.last_modified,
        }
        if endpoint.failure_reason:
            result["FailureReason"] = endpoint.failure_reason
        config = session.get(EndpointConfig, endpoint.config_name)
        if config is not None and config.request.get("DataCaptureConfig"):
            capture = config.request["DataCaptureConfig"]
            result["DataCaptureConfig"] = {
                "EnableCapture": capture.get("EnableCapture", False), "CaptureStatus": "Stopped",
                "CurrentSamplingPercentage": capture.get("InitialSamplingPercentage", 0),
                "DestinationS3Uri": capture.get("DestinationS3Uri", ""),
            }
        if endpoint.pending_config_name:
            result["PendingDeploymentSummary"] = {"EndpointConfigName": endpoint.pending_config_name}
        return result


@operation("sagemaker")
def list_endpoints(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        rows = rows_with_status(session, Endpoint, params)
    return _listing(rows, params, "Endpoints", lambda e: {
        "EndpointName": e.name, "EndpointArn": e.arn, "CreationTime": e.created,
        "LastModifiedTime": e.last_modified, "EndpointStatus": e.status})


@operation("sagemaker")
def delete_endpoint(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointName"]
    with ctx.platform.db.transaction() as session:
        endpoint = _endpoint(session, ctx, name)
        endpoint.status = "Deleting"
        endpoint.last_modified = utcnow()
    ctx.platform.endpoints.delete(name)
    return {}


@operation("sagemaker")
def update_endpoint(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointName"]
    with ctx.platform.db.transaction() as session:
        endpoint = _endpoint(session, ctx, name)
        if endpoint.status not in ("InService", "Failed"):
            raise AwsError("ValidationException", f"Cannot update in-progress endpoint \"{endpoint.arn}\".", 400)
        config = _config(session, ctx, params["EndpointConfigName"])
        endpoint.pending_config_name = config.name
        endpoint.status = "Updating"
        endpoint.last_modified = utcnow()
        arn = endpoint.arn
    ctx.platform.endpoints.reconcile_soon(name)
    return {"EndpointArn": arn}


@operation("sagemaker")
def update_endpoint_weights_and_capacities(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointName"]
    with ctx.platform.db.transaction() as session:
        endpoint = _endpoint(session, ctx, name)
        if endpoint.status != "InService":
            raise AwsError("ValidationException", f"Cannot update in-progress endpoint \"{endpoint.arn}\".", 400)
        variants = [dict(v) for v in endpoint.variants]
        by_name = {v["VariantName"]: v for v in variants}
        for change in params["DesiredWeightsAndCapacities"]:
            variant = by_name.get(change["VariantName"])
            if variant is None:
                raise AwsError("ValidationException",
                               f"The variant {change['VariantName']} does not exist in endpoint {name}.", 400)
            if "DesiredWeight" in change:
                variant["DesiredWeight"] = float(change["DesiredWeight"])
            if "DesiredInstanceCount" in change:
                variant["DesiredInstanceCount"] = int(change["DesiredInstanceCount"])
        endpoint.variants = variants
        endpoint.status = "Updating"
        endpoint.last_modified = utcnow()
        arn = endpoint.arn
    ctx.platform.endpoints.reconcile_soon(name)
    return {"EndpointArn": arn}
