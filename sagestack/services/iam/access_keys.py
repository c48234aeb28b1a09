"""IAM access keys: long-term credentials of users (at most two each, as in AWS)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.identity import AccessKey
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    SERVICE,
    caller_user_name,
    db,
    limit_exceeded,
    no_such_entity,
    paginate,
    random_id,
    random_secret,
    require_user,
    validation_error,
)

MAX_KEYS_PER_USER = 2
_STATUSES = ("Active", "Inactive")


def _key_shape(key: AccessKey) -> dict[str, Any]:
    return {
        "UserName": key.user_name,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "CreateDate": key.created,
    }


def _key_not_found(key_id: str) -> AwsError:
    return no_such_entity(f"The Access Key with id {key_id} cannot be found.")


@operation(SERVICE)
def create_access_key(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).transaction() as session:
        user = require_user(session, caller_user_name(ctx, params))
        count = len(
            session.scalars(select(AccessKey.access_key_id).where(AccessKey.user_name == user.name)).all()
        )
        # Inactive keys count too: AWS caps keys per user whatever their status.
        if count >= MAX_KEYS_PER_USER:
            raise limit_exceeded(f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}")
        key = AccessKey(
            access_key_id=random_id("AKIA", 16),
            secret_access_key=random_secret(),
            user_name=user.name,
            status="Active",
            created=utcnow(),
        )
        session.add(key)
        session.flush()
        return {"AccessKey": {**_key_shape(key), "SecretAccessKey": key.secret_access_key}}


@operation(SERVICE)
def list_access_keys(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        user = require_user(session, caller_user_name(ctx, params))
        keys = list(session.scalars(select(AccessKey).where(AccessKey.user_name == user.name)))
    keys.sort(key=_order)
    page, extra = paginate(keys, params, _order)
    return {"AccessKeyMetadata": [_key_shape(k) for k in page], **extra}


def _order(key: AccessKey) -> str:
    return f"{key.created.isoformat()}|{key.access_key_id}"


def _user_key(session: Session, ctx: RequestContext, params: dict[str, Any]) -> AccessKey:
    user = require_user(session, caller_user_name(ctx, params))
    key = session.get(AccessKey, params["AccessKeyId"])
    if key is None or key.user_name != user.name:
        raise _key_not_found(params["AccessKeyId"])
    return key


@operation(SERVICE)
def update_access_key(ctx: RequestContext, params: dict[str, Any]) -> None:
    status = params["Status"]
    if status not in _STATUSES:
        raise validation_error(status, "status", "Member must satisfy enum value set: [Active, Inactive]")
    with db(ctx).transaction() as session:
        _user_key(session, ctx, params).status = status
    return None


@operation(SERVICE)
def delete_access_key(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        session.delete(_user_key(session, ctx, params))
    return None


@operation(SERVICE)
def get_access_key_last_used(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key_id = params["AccessKeyId"]
    with db(ctx).session() as session:
        key = session.get(AccessKey, key_id)
    if key is None:
        # The operation declares no NoSuchEntity; AWS answers for unknown keys as for
        # keys of another account: not authorized.
        raise AwsError(
            "AccessDenied",
            f"User: {ctx.principal.arn} is not authorized to perform: iam:GetAccessKeyLastUsed "
            f"on resource: access key {key_id}",
            403,
        )
    if key.last_used is None:  # never signed a request: AWS's answer has no LastUsedDate
        return {"UserName": key.user_name, "AccessKeyLastUsed": {"ServiceName": "N/A", "Region": "N/A"}}
    return {"UserName": key.user_name, "AccessKeyLastUsed": {
        "LastUsedDate": key.last_used, "ServiceName": key.last_used_service or "N/A",
        "Region": key.last_used_region or "N/A"}}
