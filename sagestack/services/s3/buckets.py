"""Bucket operations: create, head, list, delete, location, versioning and ACLs."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.s3 import tagging
from sagestack.services.s3.common import (
    check_acl,
    check_expected_owner,
    not_implemented,
    owner,
    private_acl,
    store,
)

#: The one region whose buckets S3 lets their owner "re-create" with a 200 (a legacy quirk).
LEGACY_REGION = "us-east-1"
MAX_BUCKETS_PAGE = 10000


@operation("s3")
def create_bucket(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_acl(ctx, params)
    name = params["Bucket"]
    constraint = (params.get("CreateBucketConfiguration") or {}).get("LocationConstraint") or None
    if constraint == LEGACY_REGION:
        # S3 wants no constraint at all for us-east-1.
        raise AwsError("InvalidLocationConstraint", "The specified location-constraint is not valid", 400,
                       extra={"LocationConstraint": constraint})
    region = constraint or ctx.region
    try:
        store(ctx).create_bucket(name, region, ctx.account_id)
        ctx.platform.authorizer.policies_changed()  # a namesake's cached policy must not outlive it
    except AwsError as error:
        if error.code != "BucketAlreadyOwnedByYou":
            raise
        if store(ctx).get_bucket(name).region != LEGACY_REGION:
            raise
    return {"Location": f"/{name}"}


@operation("s3")
def head_bucket(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    info = store(ctx).head_bucket(params["Bucket"])
    expected = params.get("ExpectedBucketOwner")
    if expected is not None and expected != info.owner:
        raise AwsError("AccessDenied", "Access Denied", 403)
    return {"BucketRegion": info.region, "AccessPointAlias": False}


@operation("s3")
def list_buckets(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    prefix = params.get("Prefix") or ""
    region = params.get("BucketRegion")
    limit = params.get("MaxBuckets")
    if limit is not None and not 1 <= limit <= MAX_BUCKETS_PAGE:
        raise AwsError("InvalidArgument", "Argument max-buckets must be an integer between 1 and 10000", 400)
    after = _decode_token(params.get("ContinuationToken"))
    buckets = [
        b for b in store(ctx).list_buckets(owner=ctx.account_id)
        if b.name.startswith(prefix) and (region is None or b.region == region)
        and (after is None or b.name > after)
    ]
    result: dict[str, Any] = {"Owner": owner(ctx.account_id)}
    if limit is not None and len(buckets) > limit:
        buckets = buckets[:limit]
        result["ContinuationToken"] = base64.urlsafe_b64encode(buckets[-1].name.encode()).decode()
    result["Buckets"] = [
        {"Name": b.name, "CreationDate": b.created, "BucketRegion": b.region} for b in buckets
    ]
    if params.get("Prefix") is not None:
        result["Prefix"] = prefix
    return result


def _decode_token(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AwsError("InvalidArgument", "The continuation token provided is incorrect", 400) from None


@operation("s3")
def delete_bucket(ctx: RequestContext, params: dict[str, Any]) -> None:
    check_expected_owner(ctx, params)
    store(ctx).delete_bucket(params["Bucket"])
    tagging.forget_bucket(ctx, params["Bucket"])
    ctx.platform.authorizer.policies_changed()  # its policy went with it


@operation("s3")
def get_bucket_location(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    region = store(ctx).get_bucket(params["Bucket"]).region
    # us-east-1 is reported as an empty constraint, as S3 does.
    return {"LocationConstraint": None if region == LEGACY_REGION else region}


@operation("s3")
def get_bucket_versioning(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    store(ctx).get_bucket(params["Bucket"])
    return {}  # never versioned: an empty <VersioningConfiguration/>


@operation("s3")
def put_bucket_versioning(ctx: RequestContext, params: dict[str, Any]) -> None:
    store(ctx).get_bucket(params["Bucket"])
    status = (params.get("VersioningConfiguration") or {}).get("Status")
    if status == "Enabled":
        raise not_implemented("sagestack does not support bucket versioning; buckets stay unversioned.")


@operation("s3")
def get_bucket_acl(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    info = store(ctx).get_bucket(params["Bucket"])
    return private_acl(info.owner)


@operation("s3")
def put_bucket_acl(ctx: RequestContext, params: dict[str, Any]) -> None:
    check_expected_owner(ctx, params)
    store(ctx).get_bucket(params["Bucket"])
    check_acl(ctx, params)
