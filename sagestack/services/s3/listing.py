"""Listings: ListObjects (v1), ListObjectsV2, ListObjectVersions (unversioned) and ListMultipartUploads.

With ``encoding-type=url`` each field is encoded exactly where botocore decodes
it (``botocore.handlers.decode_list_object*``): S3 encodes a slightly different
set in its v1 documentation, but a field encoded and never decoded would reach
the user mangled, so the client's behaviour is the contract here.
"""

from __future__ import annotations

from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.pagination import decode_token, encode_token
from sagestack.services.s3.common import (
    STORAGE_CLASS,
    check_expected_owner,
    owner,
    store,
    url_encoder,
)
from sagestack.storage.api import ObjectInfo

DEFAULT_MAX_KEYS = 1000


def _limit(params: dict[str, Any], member: str, argument: str) -> int:
    value = params.get(member)
    if value is None:
        return DEFAULT_MAX_KEYS
    if value < 0:
        raise AwsError("InvalidArgument", f"Argument {argument} must be an integer between 0 and 2147483647",
                       400, extra={"ArgumentName": argument, "ArgumentValue": str(value)})
    return value


def _entry(info: ObjectInfo, key: str | None, with_owner: dict[str, str] | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "Key": key,
        "LastModified": info.last_modified,
        "ETag": info.etag,
        "Size": info.size,
        "StorageClass": STORAGE_CLASS,
    }
    if info.checksums:
        item["ChecksumAlgorithm"] = sorted(info.checksums)
        item["ChecksumType"] = info.checksum_type
    if with_owner is not None:
        item["Owner"] = with_owner
    return item


def _page(ctx: RequestContext, params: dict[str, Any], marker: str | None, max_keys: int) -> Any:
    delimiter = params.get("Delimiter") or None
    return store(ctx).list_objects(params["Bucket"], params.get("Prefix") or "", delimiter, marker or None,
                                   max_keys)


@operation("s3")
def list_objects(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    enc = url_encoder(params)
    max_keys = _limit(params, "MaxKeys", "maxKeys")
    page = _page(ctx, params, params.get("Marker"), max_keys)
    me = owner(ctx.account_id)
    result: dict[str, Any] = {
        "Name": params["Bucket"],
        "Prefix": params.get("Prefix") or "",
        "Marker": enc(params.get("Marker") or ""),
        "MaxKeys": max_keys,
        "Delimiter": enc(params.get("Delimiter")),
        "IsTruncated": page.is_truncated,
        "Contents": [_entry(i, enc(i.key), me) for i in page.contents] or None,
        "CommonPrefixes": [{"Prefix": enc(p)} for p in page.common_prefixes] or None,
        "EncodingType": params.get("EncodingType"),
    }
    # Like S3, v1 names the next marker only when a delimiter is used; without one the
    # client continues from the last key it was given.
    if page.is_truncated and params.get("Delimiter"):
        result["NextMarker"] = enc(page.next_marker)
    return result


def _invalid_token(token: str) -> AwsError:
    return AwsError("InvalidArgument", "The continuation token provided is incorrect", 400,
                    extra={"ArgumentName": "continuation-token", "ArgumentValue": token})


@operation("s3")
def list_objects_v2(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    enc = url_encoder(params)
    max_keys = _limit(params, "MaxKeys", "maxKeys")
    token = params.get("ContinuationToken")
    start_after = params.get("StartAfter")
    markers = [m for m in (start_after, decode_token(token, _invalid_token, str) if token else None) if m]
    marker = max(markers, key=lambda m: m.encode("utf-8", "surrogatepass")) if markers else None
    page = _page(ctx, params, marker, max_keys)
    me = owner(ctx.account_id) if params.get("FetchOwner") else None
    result: dict[str, Any] = {
        "Name": params["Bucket"],
        "Prefix": enc(params.get("Prefix") or ""),
        "MaxKeys": max_keys,
        "KeyCount": len(page.contents) + len(page.common_prefixes),
        "Delimiter": enc(params.get("Delimiter")),
        "IsTruncated": page.is_truncated,
        "Contents": [_entry(i, enc(i.key), me) for i in page.contents] or None,
        "CommonPrefixes": [{"Prefix": enc(p)} for p in page.common_prefixes] or None,
        "EncodingType": params.get("EncodingType"),
        "ContinuationToken": token,
        "StartAfter": enc(start_after),
    }
    if page.is_truncated and page.next_marker is not None:
        result["NextContinuationToken"] = encode_token(page.next_marker)
    return result


@operation("s3")
def list_object_versions(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Buckets are unversioned: every object is its only version, ``null``, and the latest."""
    check_expected_owner(ctx, params)
    enc = url_encoder(params)
    max_keys = _limit(params, "MaxKeys", "maxKeys")
    key_marker, version_marker = params.get("KeyMarker"), params.get("VersionIdMarker")
    if version_marker and not key_marker:
        raise AwsError("InvalidArgument", "A version-id marker cannot be specified without a key marker.", 400,
                       extra={"ArgumentName": "version-id-marker", "ArgumentValue": version_marker})
    if version_marker and version_marker != "null":
        raise AwsError("InvalidArgument", "Invalid version id specified", 400,
                       extra={"ArgumentName": "version-id-marker", "ArgumentValue": version_marker})
    page = _page(ctx, params, key_marker, max_keys)
    me = owner(ctx.account_id)
    versions = [{**_entry(i, enc(i.key), me), "VersionId": "null", "IsLatest": True} for i in page.contents]
    result: dict[str, Any] = {
        "Name": params["Bucket"],
        "Prefix": enc(params.get("Prefix") or ""),
        "KeyMarker": enc(key_marker or ""),
        "VersionIdMarker": version_marker or "",
        "MaxKeys": max_keys,
        "Delimiter": enc(params.get("Delimiter")),
        "IsTruncated": page.is_truncated,
        "Versions": versions or None,
        "CommonPrefixes": [{"Prefix": enc(p)} for p in page.common_prefixes] or None,
        "EncodingType": params.get("EncodingType"),
    }
    if page.is_truncated and page.next_marker is not None:
        result["NextKeyMarker"] = enc(page.next_marker)
        if page.next_marker not in page.common_prefixes:
            result["NextVersionIdMarker"] = "null"
    return result


@operation("s3")
def list_multipart_uploads(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    enc = url_encoder(params)
    limit = _limit(params, "MaxUploads", "max-uploads")
    page = store(ctx).list_multipart_uploads(
        params["Bucket"],
        params.get("Prefix") or "",
        params.get("Delimiter") or None,
        params.get("KeyMarker") or None,
        params.get("UploadIdMarker") or None,
        limit,
    )
    uploads = []
    for upload in page.uploads:
        who = owner(upload.owner)
        item: dict[str, Any] = {
            "UploadId": upload.upload_id,
            "Key": enc(upload.key),
            "Initiated": upload.initiated,
            "StorageClass": STORAGE_CLASS,
            "Owner": who,
            "Initiator": who,
        }
        if upload.checksum_algorithm:
            item["ChecksumAlgorithm"] = upload.checksum_algorithm
            item["ChecksumType"] = upload.checksum_type
        uploads.append(item)
    return {
        "Bucket": params["Bucket"],
        "KeyMarker": enc(params.get("KeyMarker") or ""),
        "UploadIdMarker": params.get("UploadIdMarker") or "",
        "NextKeyMarker": enc(page.next_key_marker),
        "NextUploadIdMarker": page.next_upload_id_marker,
        "Prefix": enc(params.get("Prefix") or ""),
        "Delimiter": enc(params.get("Delimiter")),
        "MaxUploads": limit,
        "IsTruncated": page.is_truncated,
        "Uploads": uploads or None,
        "CommonPrefixes": [{"Prefix": enc(p)} for p in page.common_prefixes] or None,
        "EncodingType": params.get("EncodingType"),
    }
