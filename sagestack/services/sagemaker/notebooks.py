"""Notebook instances and their lifecycle configurations. The instances run in control/notebooks.py."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import select

from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.notebooks import NotebookInstance, NotebookLifecycleConfig
from sagestack.logic.tags import drop_tags, put_tags
from sagestack.platform import NotebookRunner
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import (
    list_result,
    require_assumable_role,
    resource_arn,
)

DEFAULT_PLATFORM = "notebook-al2-v3"  # JupyterLab 4, as served here
DEFAULT_SESSION_SECONDS = 43200
MIN_VOLUME_GB, MAX_VOLUME_GB = 5, 16384
#: Create/Update members kept as given and echoed by Describe.
_ECHOED = ("InstanceType", "RoleArn", "KmsKeyId", "SubnetId", "DirectInternetAccess", "VolumeSizeInGB",
           "DefaultCodeRepository", "AdditionalCodeRepositories", "RootAccess", "PlatformIdentifier",
           "InstanceMetadataServiceConfiguration", "IpAddressType")


def _instance_arn(ctx: RequestContext, name: str) -> str:
    return resource_arn(ctx, "notebook-instance", name)


def _config_arn(ctx: RequestContext, name: str) -> str:
    return resource_arn(ctx, "notebook-instance-lifecycle-config", name)


def _controller(ctx: RequestContext) -> NotebookRunner:
    return ctx.platform.notebooks


def _instance(session: Any, name: str) -> NotebookInstance:
    row = session.get(NotebookInstance, name)
    if row is None:
        raise AwsError("ValidationException", "RecordNotFound", 400)  # SageMaker's words for a missing instance
    return row


#: The statuses an instance may be started, updated or deleted from.
_AT_REST = ("Stopped", "Failed")


def _instance_for(session: Any, name: str, allowed: tuple[str, ...], target: str) -> NotebookInstance:
    """The instance, when its status allows the transition to ``target``; SageMaker's error when not."""
    row = _instance(session, name)
    if row.status not in allowed:
        message = (f"Status ({row.status}) not in ([{', '.join(allowed)}]). "
                   f"Unable to transition to ({target}) for Notebook Instance ({row.arn}).")
        raise AwsError("ValidationException", message, 400)
    return row


def _transition(ctx: RequestContext, name: str, allowed: tuple[str, ...], target: str) -> None:
    """Stop and Delete: the status changes here, the controller does the rest."""
    with ctx.platform.db.transaction() as session:
        row = _instance_for(session, name, allowed, target)
        row.status, row.last_modified = target, utcnow()


# ---------------------------------------------------------------- validation


def _check_lifecycle_config(ctx: RequestContext, session: Any, name: str | None) -> None:
    if name:
        _lifecycle(session, ctx, name)


def _check_volume(size: int | None) -> None:
    if size is not None and not MIN_VOLUME_GB <= size <= MAX_VOLUME_GB:
        raise AwsError("ValidationException", f"1 validation error detected: Value '{size}' at 'volumeSizeInGB' "
                                              f"failed to satisfy constraint: Member must have value between "
                                              f"{MIN_VOLUME_GB} and {MAX_VOLUME_GB}", 400)


def _check_accelerators(params: dict[str, Any]) -> None:
    if params.get("AcceleratorTypes"):
        raise AwsError("ValidationException", "Elastic Inference accelerators (AcceleratorTypes) are not "
                                              "supported.", 400)


def _check_hooks(params: dict[str, Any]) -> None:
    for hook in ("OnCreate", "OnStart"):
        for item in params.get(hook) or []:
            try:
                base64.b64decode(item.get("Content", ""), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise AwsError("ValidationException", f"{hook} Content must be a base64-encoded script.", 400) from exc


# ---------------------------------------------------------------- notebook instances


@operation("sagemaker")
def create_notebook_instance(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["NotebookInstanceName"]
    arn = _instance_arn(ctx, name)
    _check_volume(params.get("VolumeSizeInGB"))
    _check_accelerators(params)
    settings = {key: params[key] for key in _ECHOED if key in params}
    if params.get("SecurityGroupIds"):
        settings["SecurityGroups"] = list(params["SecurityGroupIds"])
    if params.get("LifecycleConfigName"):
        settings["NotebookInstanceLifecycleConfigName"] = params["LifecycleConfigName"]
    settings.setdefault("DirectInternetAccess", "Enabled")
    settings.setdefault("VolumeSizeInGB", MIN_VOLUME_GB)
    settings.setdefault("RootAccess", "Enabled")
    settings.setdefault("PlatformIdentifier", DEFAULT_PLATFORM)
    now = utcnow()
    with ctx.platform.db.transaction() as session:
        if session.get(NotebookInstance, name) is not None:
            raise AwsError("ValidationException", f"Cannot create a duplicate Notebook Instance ({arn})", 400)
        require_assumable_role(ctx, params["RoleArn"])
        _check_lifecycle_config(ctx, session, params.get("LifecycleConfigName"))
        session.add(NotebookInstance(name=name, arn=arn, settings=settings, status="Pending", created=now,
                                     last_modified=now, session_keys=[]))
        put_tags(session, arn, params.get("Tags", []))
    _controller(ctx).launch(name)
    return {"NotebookInstanceArn": arn}


@operation("sagemaker")
def describe_notebook_instance(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        row = _instance(session, params["NotebookInstanceName"])
        result: dict[str, Any] = {
            "NotebookInstanceArn": row.arn,
            "NotebookInstanceName": row.name,
            "NotebookInstanceStatus": row.status,
            "Url": _controller(ctx).url_of(row.name),
            "CreationTime": row.created,
            "LastModifiedTime": row.last_modified,
        }
        if row.failure_reason and row.status == "Failed":
            result["FailureReason"] = row.failure_reason
        result.update(row.settings)
        return result


def _summary(ctx: RequestContext, row: NotebookInstance) -> dict[str, Any]:
    item = {
        "NotebookInstanceName": row.name, "NotebookInstanceArn": row.arn, "NotebookInstanceStatus": row.status,
        "Url": _controller(ctx).url_of(row.name), "InstanceType": row.settings["InstanceType"],
        "CreationTime": row.created, "LastModifiedTime": row.last_modified,
    }
    for key in ("NotebookInstanceLifecycleConfigName", "DefaultCodeRepository", "AdditionalCodeRepositories"):
        if row.settings.get(key):
            item[key] = row.settings[key]
    return item


def _instance_filter(params: dict[str, Any]) -> Any:
    status = params.get("StatusEquals")
    config = (params.get("NotebookInstanceLifecycleConfigNameContains") or "").lower()
    repo = (params.get("DefaultCodeRepositoryContains") or "").lower()
    additional = params.get("AdditionalCodeRepositoryEquals")

    def keep(row: NotebookInstance) -> bool:
        settings = row.settings
        return ((not status or row.status == status)
                and (not config or config in (settings.get("NotebookInstanceLifecycleConfigName") or "").lower())
                and (not repo or repo in (settings.get("DefaultCodeRepository") or "").lower())
                and (not additional or additional in (settings.get("AdditionalCodeRepositories") or [])))

    return keep


@operation("sagemaker")
def list_notebook_instances(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        rows = list(session.scalars(select(NotebookInstance)))
    return list_result(rows, params, "NotebookInstances", lambda r: _summary(ctx, r), keep=_instance_filter(params))


@operation("sagemaker")
def start_notebook_instance(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["NotebookInstanceName"]
    with ctx.platform.db.transaction() as session:
        row = _instance_for(session, name, _AT_REST, "Pending")
        require_assumable_role(ctx, row.settings["RoleArn"])
        row.status, row.failure_reason, row.last_modified = "Pending", None, utcnow()
    _controller(ctx).launch(name)
    return {}


@operation("sagemaker")
def stop_notebook_instance(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["NotebookInstanceName"]
    _transition(ctx, name, ("InService",), "Stopping")
    _controller(ctx).stop(name)
    return {}


@operation("sagemaker")
def delete_notebook_instance(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["NotebookInstanceName"]
    _transition(ctx, name, _AT_REST, "Deleting")
    _controller(ctx).delete(name)
    return {}


_DISASSOCIATE = {
    "DisassociateLifecycleConfig": ("NotebookInstanceLifecycleConfigName",),
    "DisassociateDefaultCodeRepository": ("DefaultCodeRepository",),
    "DisassociateAdditionalCodeRepositories": ("AdditionalCodeRepositories",),
    "DisassociateAcceleratorTypes": ("AcceleratorTypes",),
}


@operation("sagemaker")
def update_notebook_instance(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Applied at once: a stopped instance has nothing to redeploy, so it never stays Updating."""
    _check_accelerators(params)
    _check_volume(params.get("VolumeSizeInGB"))
    with ctx.platform.db.transaction() as session:
        row = _instance_for(session, params["NotebookInstanceName"], _AT_REST, "Updating")
        settings = dict(row.settings)
        if params.get("VolumeSizeInGB") is not None and params["VolumeSizeInGB"] < settings["VolumeSizeInGB"]:
            raise AwsError("ValidationException", "The volume size of a notebook instance can only be increased "
                                                  f"(it is {settings['VolumeSizeInGB']} GB).", 400)
        if params.get("RoleArn"):
            require_assumable_role(ctx, params["RoleArn"])
        if params.get("LifecycleConfigName"):
            _check_lifecycle_config(ctx, session, params["LifecycleConfigName"])
            settings["NotebookInstanceLifecycleConfigName"] = params["LifecycleConfigName"]
        settings.update({key: params[key] for key in _ECHOED if params.get(key) is not None})
        for flag, keys in _DISASSOCIATE.items():
            if params.get(flag):
                for key in keys:
                    settings.pop(key, None)
        row.settings, row.last_modified = settings, utcnow()
    return {}


@operation("sagemaker")
def create_presigned_notebook_instance_url(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        row = _instance(session, params["NotebookInstanceName"])
        name, created = row.name, row.created
    seconds = params.get("SessionExpirationDurationInSeconds") or DEFAULT_SESSION_SECONDS
    return {"AuthorizedUrl": _controller(ctx).presigned_url(name, created, seconds)}


# ---------------------------------------------------------------- lifecycle configurations


def _lifecycle(session: Any, ctx: RequestContext, name: str) -> NotebookLifecycleConfig:
    config = session.get(NotebookLifecycleConfig, name)
    if config is None:
        raise AwsError("ValidationException", f"Unable to describe Notebook Instance Lifecycle Config "
                                              f"'{_config_arn(ctx, name)}'. (Reason: RecordNotFound)", 400)
    return config


@operation("sagemaker")
def create_notebook_instance_lifecycle_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["NotebookInstanceLifecycleConfigName"]
    arn = _config_arn(ctx, name)
    _check_hooks(params)
    now = utcnow()
    with ctx.platform.db.transaction() as session:
        if session.get(NotebookLifecycleConfig, name) is not None:
            raise AwsError("ValidationException", f"Unable to create Notebook Instance Lifecycle Config {arn}: "
                                                  "it already exists.", 400)
        session.add(NotebookLifecycleConfig(name=name, arn=arn, on_create=list(params.get("OnCreate") or []),
                                            on_start=list(params.get("OnStart") or []), created=now,
                                            last_modified=now))
        put_tags(session, arn, params.get("Tags", []))
    return {"NotebookInstanceLifecycleConfigArn": arn}


@operation("sagemaker")
def describe_notebook_instance_lifecycle_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        config = _lifecycle(session, ctx, params["NotebookInstanceLifecycleConfigName"])
        result: dict[str, Any] = {
            "NotebookInstanceLifecycleConfigArn": config.arn,
            "NotebookInstanceLifecycleConfigName": config.name,
            "CreationTime": config.created,
            "LastModifiedTime": config.last_modified,
        }
        if config.on_create:
            result["OnCreate"] = config.on_create
        if config.on_start:
            result["OnStart"] = config.on_start
        return result


@operation("sagemaker")
def list_notebook_instance_lifecycle_configs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        rows = list(session.scalars(select(NotebookLifecycleConfig)))
    return list_result(rows, params, "NotebookInstanceLifecycleConfigs", lambda r: {
        "NotebookInstanceLifecycleConfigName": r.name, "NotebookInstanceLifecycleConfigArn": r.arn,
        "CreationTime": r.created, "LastModifiedTime": r.last_modified},
        sort_keys={"CreationTime": lambda r: r.created, "Name": lambda r: r.name,
                   "LastModifiedTime": lambda r: r.last_modified})


@operation("sagemaker")
def update_notebook_instance_lifecycle_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Takes effect at the next start of the instances that use it, as in SageMaker."""
    _check_hooks(params)
    with ctx.platform.db.transaction() as session:
        config = _lifecycle(session, ctx, params["NotebookInstanceLifecycleConfigName"])
        if "OnCreate" in params:
            config.on_create = list(params["OnCreate"] or [])
        if "OnStart" in params:
            config.on_start = list(params["OnStart"] or [])
        config.last_modified = utcnow()
    return {}


@operation("sagemaker")
def delete_notebook_instance_lifecycle_config(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["NotebookInstanceLifecycleConfigName"]
    with ctx.platform.db.transaction() as session:
        config = _lifecycle(session, ctx, name)
        users = [r.name for r in session.scalars(select(NotebookInstance))
                 if r.settings.get("NotebookInstanceLifecycleConfigName") == name]
        if users:
            raise AwsError("ValidationException", f"Notebook Instance Lifecycle Config {config.arn} is in use by "
                                                  f"notebook instance(s) {', '.join(sorted(users))}.", 400)
        drop_tags(session, config.arn)
        session.delete(config)
    return {}
