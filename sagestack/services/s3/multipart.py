"""Multipart uploads: create, upload a part (body or copy), complete, abort, list parts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sagestack.aws.errors import AwsError
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.s3 import tagging
from sagestack.services.s3.bodies import is_small
from sagestack.services.s3.common import (
    CHECKSUM_MEMBERS,
    MAX_PART_NUMBER,
    STORAGE_CLASS,
    check_acl,
    check_expected_owner,
    check_version_id,
    checksum_members,
    header_checksums,
    object_meta,
    owner,
    parse_copy_source,
    requested_algorithms,
    run,
    store,
)
from sagestack.services.s3.objects import check_copy_source, receive_expected
from sagestack.storage import errors
from sagestack.storage.api import BodyWriter, ChecksumExpectations, CompletedPart, ObjectStore, PartInfo


@operation("s3")
def create_multipart_upload(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_acl(ctx, params)
    check_expected_owner(ctx, params)
    tags = tagging.parse_header(params.get("Tagging"))
    upload = store(ctx).create_multipart_upload(
        params["Bucket"],
        params["Key"],
        object_meta(params),
        ctx.account_id,
        checksum_algorithm=params.get("ChecksumAlgorithm"),
        checksum_type=params.get("ChecksumType"),
    )
    tagging.hold_upload_tags(ctx, upload.upload_id, tags)
    return {
        "Bucket": params["Bucket"],
        "Key": params["Key"],
        "UploadId": upload.upload_id,
        "ChecksumAlgorithm": upload.checksum_algorithm,
        "ChecksumType": upload.checksum_type,
    }


def _check_part_number(part_number: int) -> None:
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise errors.invalid_part_number_argument(part_number)


def _begin_part(st: ObjectStore, params: dict[str, Any]) -> BodyWriter:
    # A wrong upload id must fail before the part's body is read.
    upload = st.get_upload(params["Bucket"], params["Key"], params["UploadId"])
    return st.begin_write(requested_algorithms(params, upload.checksum_algorithm))


def _commit_part(st: ObjectStore, params: dict[str, Any], writer: BodyWriter, tail: bytes,
                 expected: ChecksumExpectations) -> PartInfo:
    if tail:
        writer.write(tail)
    return st.upload_part(params["Bucket"], params["Key"], params["UploadId"], params["PartNumber"], writer,
                          expected)


def _part_small(st: ObjectStore, params: dict[str, Any], data: bytes, expected: ChecksumExpectations) -> PartInfo:
    writer = _begin_part(st, params)
    try:
        return _commit_part(st, params, writer, data, expected)
    finally:
        writer.abort()


@operation("s3")
async def upload_part(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_part_number(params["PartNumber"])
    sent = header_checksums(params)
    ChecksumExpectations(params.get("ContentMD5"), sent).validate()
    st = store(ctx)
    if params.get("ExpectedBucketOwner") is not None:
        await run(check_expected_owner, ctx, params)
    stream = params.get("Body", b"")
    if is_small(stream):
        data, expected = await receive_expected(stream, None, params, sent)
        part = await run(_part_small, st, params, data, expected)
    else:
        writer = await run(_begin_part, st, params)
        try:
            tail, expected = await receive_expected(stream, writer, params, sent)
            part = await run(_commit_part, st, params, writer, tail, expected)
        finally:
            writer.abort()
    return {"ETag": part.etag, **checksum_members(part.checksums)}


@operation("s3")
def upload_part_copy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_part_number(params["PartNumber"])
    check_expected_owner(ctx, params)
    src_bucket, src_key, version = parse_copy_source(params["CopySource"])
    check_version_id(version)
    st = store(ctx)
    check_copy_source(st, src_bucket, src_key, params)
    part = st.upload_part_copy(params["Bucket"], params["Key"], params["UploadId"], params["PartNumber"],
                               src_bucket, src_key, params.get("CopySourceRange"))
    copied = {"ETag": part.etag, "LastModified": part.last_modified, **checksum_members(part.checksums)}
    return {"CopyPartResult": copied}


def _completed_parts(params: dict[str, Any]) -> list[CompletedPart]:
    listed = (params.get("MultipartUpload") or {}).get("Parts") or []
    if not listed:
        raise errors.malformed_xml()
    parts = []
    for item in listed:
        if item.get("PartNumber") is None or item.get("ETag") is None:
            raise errors.malformed_xml()
        checksums = {alg: item[m] for alg, m in CHECKSUM_MEMBERS.items() if item.get(m)}
        parts.append(CompletedPart(item["PartNumber"], item["ETag"], checksums))
    return parts


def _location(ctx: RequestContext, bucket: str, key: str) -> str:
    settings = ctx.platform.settings
    host = "localhost" if settings.host in ("0.0.0.0", "::", "127.0.0.1") else settings.host
    return f"{settings.scheme}://{host}:{settings.port}/{bucket}/{quote(key, safe='/')}"


@operation("s3")
def complete_multipart_upload(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    parts = _completed_parts(params)
    expected = ChecksumExpectations(None, header_checksums(params), params.get("MpuObjectSize"))
    bucket, key, upload_id = params["Bucket"], params["Key"], params["UploadId"]
    info = store(ctx).complete_multipart_upload(
        bucket, key, upload_id, parts, expected,
        if_match=params.get("IfMatch"), if_none_match=params.get("IfNoneMatch"),
    )
    tagging.set_object_tags(ctx, info, tagging.take_upload_tags(ctx, upload_id))
    return {
        "Location": _location(ctx, bucket, key),
        "Bucket": bucket,
        "Key": key,
        "ETag": info.etag,
        **checksum_members(info.checksums, info.checksum_type),
    }


@operation("s3")
def abort_multipart_upload(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    store(ctx).abort_multipart_upload(params["Bucket"], params["Key"], params["UploadId"])
    tagging.take_upload_tags(ctx, params["UploadId"])
    return {}


@operation("s3")
def list_parts(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    marker = params.get("PartNumberMarker") or 0
    max_parts = params.get("MaxParts")
    if max_parts is not None and max_parts < 0:
        raise AwsError("InvalidArgument", "Argument max-parts must be an integer between 0 and 2147483647", 400)
    limit = 1000 if max_parts is None else max_parts
    page = store(ctx).list_parts(params["Bucket"], params["Key"], params["UploadId"], marker, limit)
    upload = page.upload
    who = owner(upload.owner)
    result: dict[str, Any] = {
        "Bucket": params["Bucket"],
        "Key": params["Key"],
        "UploadId": params["UploadId"],
        "PartNumberMarker": marker,
        "MaxParts": limit,
        "IsTruncated": page.is_truncated,
        "Parts": [
            {
                "PartNumber": p.part_number,
                "LastModified": p.last_modified,
                "ETag": p.etag,
                "Size": p.size,
                **checksum_members(p.checksums),
            }
            for p in page.parts
        ] or None,
        "Initiator": who,
        "Owner": who,
        "StorageClass": STORAGE_CLASS,
        "ChecksumAlgorithm": upload.checksum_algorithm,
        "ChecksumType": upload.checksum_type,
    }
    if page.is_truncated:
        result["NextPartNumberMarker"] = page.next_part_number_marker
    return result
