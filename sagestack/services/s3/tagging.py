"""Bucket and object tagging, kept in the platform's resource-tag table (by ARN).

Object tags belong to one *incarnation* of an object: S3 drops them when the
key is overwritten. Rather than touching the tag table on every PUT, a tag set
is stored with a stamp of the object it was set on (ETag and Last-Modified);
a tag set whose stamp no longer matches the current object is treated as absent
and replaced on the next write.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from sagestack.arns import resource_arn
from sagestack.aws.errors import AwsError
from sagestack.logic import tags as tag_store
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.s3.common import check_expected_owner, check_version_id, store
from sagestack.storage.api import ObjectInfo

#: A tag key S3 would refuse ('#' is not allowed), so no client can read or set it.
_STAMP_KEY = "#sagestack-object-stamp"
MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
_MAX_KEY, _MAX_VALUE = 128, 256


def bucket_arn(bucket: str) -> str:
    return resource_arn("s3", "", "", bucket)


def object_arn(bucket: str, key: str) -> str:
    return resource_arn("s3", "", "", f"{bucket}/{key}")


def upload_arn(upload_id: str) -> str:
    """Tags given to CreateMultipartUpload wait here until the upload completes."""
    return f"sagestack:s3-upload:{upload_id}"


def _stamp(info: ObjectInfo) -> str:
    return f"{info.etag}@{info.last_modified.isoformat()}"


def _invalid_tag(message: str) -> AwsError:
    return AwsError("InvalidTag", message, 400)


def validate(tags: list[dict[str, str]], limit: int) -> dict[str, str]:
    if len(tags) > limit:
        raise _invalid_tag(f"Object tags cannot be greater than {limit}" if limit == MAX_OBJECT_TAGS
                           else f"Bucket tags cannot be greater than {limit}")
    result: dict[str, str] = {}
    for tag in tags:
        key, value = tag.get("Key", ""), tag.get("Value", "")
        if not key or len(key) > _MAX_KEY:
            raise _invalid_tag("The TagKey you have provided is invalid")
        if len(value) > _MAX_VALUE:
            raise _invalid_tag("The TagValue you have provided is invalid")
        if key in result:
            raise _invalid_tag("Cannot provide multiple Tags with the same key")
        result[key] = value
    return result


def parse_header(value: str | None) -> dict[str, str] | None:
    """``x-amz-tagging: k1=v1&k2=v2`` (URL query form)."""
    if value is None:
        return None
    pairs = parse_qsl(value, keep_blank_values=True)
    return validate([{"Key": k, "Value": v} for k, v in pairs], MAX_OBJECT_TAGS)


# ---------------------------------------------------------------- storage


def _read(ctx: RequestContext, arn: str) -> dict[str, str]:
    with ctx.platform.db.session() as s:
        return tag_store.tag_map(s, arn)


def _write(ctx: RequestContext, arn: str, tags: dict[str, str]) -> None:
    with ctx.platform.db.transaction() as s:
        tag_store.replace_tags(s, arn, tags)


def _forget(ctx: RequestContext, arns: list[str]) -> None:
    with ctx.platform.db.transaction() as s:
        tag_store.drop_tags(s, arns)


def object_tags(ctx: RequestContext, info: ObjectInfo) -> dict[str, str]:
    stored = _read(ctx, object_arn(info.bucket, info.key))
    if stored.pop(_STAMP_KEY, None) != _stamp(info):
        return {}
    return stored


def set_object_tags(ctx: RequestContext, info: ObjectInfo, tags: dict[str, str] | None) -> None:
    """Tag the object ``info`` describes; ``None`` leaves any (now stale) tag set alone."""
    if tags is None:
        return
    _write(ctx, object_arn(info.bucket, info.key), {**tags, _STAMP_KEY: _stamp(info)} if tags else {})


def forget_objects(ctx: RequestContext, bucket: str, keys: list[str]) -> None:
    if keys:
        _forget(ctx, [object_arn(bucket, k) for k in keys])


def forget_bucket(ctx: RequestContext, bucket: str) -> None:
    _forget(ctx, [bucket_arn(bucket)])


def hold_upload_tags(ctx: RequestContext, upload_id: str, tags: dict[str, str] | None) -> None:
    if tags:
        _write(ctx, upload_arn(upload_id), tags)


def take_upload_tags(ctx: RequestContext, upload_id: str) -> dict[str, str] | None:
    tags = _read(ctx, upload_arn(upload_id))
    if not tags:
        return None
    _forget(ctx, [upload_arn(upload_id)])
    return tags


# ---------------------------------------------------------------- handlers


def _tag_set(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@operation("s3")
def put_bucket_tagging(ctx: RequestContext, params: dict[str, Any]) -> None:
    check_expected_owner(ctx, params)
    store(ctx).get_bucket(params["Bucket"])
    tags = validate((params.get("Tagging") or {}).get("TagSet") or [], MAX_BUCKET_TAGS)
    _write(ctx, bucket_arn(params["Bucket"]), tags)


@operation("s3")
def get_bucket_tagging(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    store(ctx).get_bucket(params["Bucket"])
    tags = _read(ctx, bucket_arn(params["Bucket"]))
    if not tags:
        raise AwsError("NoSuchTagSet", "The TagSet does not exist", 404, extra={"BucketName": params["Bucket"]})
    return {"TagSet": _tag_set(tags)}


@operation("s3")
def delete_bucket_tagging(ctx: RequestContext, params: dict[str, Any]) -> None:
    check_expected_owner(ctx, params)
    store(ctx).get_bucket(params["Bucket"])
    forget_bucket(ctx, params["Bucket"])


@operation("s3")
def put_object_tagging(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    info = store(ctx).head_object(params["Bucket"], params["Key"])
    tags = validate((params.get("Tagging") or {}).get("TagSet") or [], MAX_OBJECT_TAGS)
    set_object_tags(ctx, info, tags)
    return {}


@operation("s3")
def get_object_tagging(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    info = store(ctx).head_object(params["Bucket"], params["Key"])
    return {"TagSet": _tag_set(object_tags(ctx, info))}


@operation("s3")
def delete_object_tagging(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    store(ctx).head_object(params["Bucket"], params["Key"])
    forget_objects(ctx, params["Bucket"], [params["Key"]])
    return {}
