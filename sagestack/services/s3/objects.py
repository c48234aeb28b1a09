"""Object operations: put, get, head, delete (one or many), copy, and object ACLs."""

from __future__ import annotations

from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.aws.http import BodyStream
from sagestack.aws.protocols.rest import STATUS_KEY
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.s3 import tagging
from sagestack.services.s3.bodies import (
    SMALL_BODY,
    close_chunks,
    is_small,
    read_small,
    receive_into,
    send_chunks,
)
from sagestack.services.s3.common import (
    MAX_PART_NUMBER,
    apply_response_overrides,
    check_acl,
    check_expected_owner,
    check_version_id,
    checksum_members,
    header_checksums,
    object_headers,
    object_meta,
    parse_copy_source,
    private_acl,
    requested_algorithms,
    run,
    store,
    trailer_checksums,
)
from sagestack.storage import errors, ranges
from sagestack.storage.api import BodyWriter, ChecksumExpectations, ObjectInfo, ObjectMeta, ObjectStore

_CONDITIONS = ("IfMatch", "IfNoneMatch", "IfModifiedSince", "IfUnmodifiedSince")


# ---------------------------------------------------------------- PutObject


def _begin_put(st: ObjectStore, bucket: str, algorithms: set[str]) -> BodyWriter:
    # A missing bucket must fail before a (possibly huge) body is read.
    st.head_bucket(bucket)
    return st.begin_write(algorithms)


def _commit_put(st: ObjectStore, params: dict[str, Any], writer: BodyWriter, tail: bytes, meta: ObjectMeta,
                expected: ChecksumExpectations) -> ObjectInfo:
    if tail:
        writer.write(tail)
    return st.put_object(params["Bucket"], params["Key"], writer, meta, expected,
                         if_match=params.get("IfMatch"), if_none_match=params.get("IfNoneMatch"))


def _put_small(st: ObjectStore, params: dict[str, Any], data: bytes, algorithms: set[str], meta: ObjectMeta,
               expected: ChecksumExpectations) -> ObjectInfo:
    writer = st.begin_write(algorithms)
    try:
        return _commit_put(st, params, writer, data, meta, expected)
    finally:
        writer.abort()


async def receive_expected(stream: BodyStream | bytes, writer: BodyWriter | None, params: dict[str, Any],
                           sent: dict[str, str]) -> tuple[bytes, ChecksumExpectations]:
    """Receive a body; returns its unwritten tail (all of it without a writer: a small body)
    and what the request claimed about it."""
    tail = await (receive_into(stream, writer) if writer is not None else read_small(stream))
    trailers = stream.trailers if isinstance(stream, BodyStream) else {}
    declared = stream.declared_length if isinstance(stream, BodyStream) else None
    expected = ChecksumExpectations(params.get("ContentMD5"), {**sent, **trailer_checksums(trailers)}, declared)
    return tail, expected


@operation("s3")
async def put_object(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_acl(ctx, params)
    meta = object_meta(params)
    tags = tagging.parse_header(params.get("Tagging"))
    sent = header_checksums(params)
    ChecksumExpectations(params.get("ContentMD5"), sent).validate()  # malformed digests: before any byte
    st = store(ctx)
    if params.get("ExpectedBucketOwner") is not None:
        await run(check_expected_owner, ctx, params)
    stream = params.get("Body", b"")
    algorithms = requested_algorithms(params)
    if is_small(stream):
        # Small bodies: no early bucket check and one thread hop for the whole write.
        data, expected = await receive_expected(stream, None, params, sent)
        info = await run(_put_small, st, params, data, algorithms, meta, expected)
    else:
        writer = await run(_begin_put, st, params["Bucket"], algorithms)
        try:
            tail, expected = await receive_expected(stream, writer, params, sent)
            info = await run(_commit_put, st, params, writer, tail, meta, expected)
        finally:
            writer.abort()  # a no-op once committed; drops the temp file otherwise
    if tags is not None:
        await run(tagging.set_object_tags, ctx, info, tags)
    return {"ETag": info.etag, **checksum_members(info.checksums, info.checksum_type)}


# ---------------------------------------------------------------- GetObject / HeadObject


def _check_conditions(info: ObjectInfo, params: dict[str, Any]) -> ranges.Condition:
    return ranges.check_conditions(
        info.etag,
        info.last_modified,
        if_match=params.get("IfMatch"),
        if_none_match=params.get("IfNoneMatch"),
        if_modified_since=params.get("IfModifiedSince"),
        if_unmodified_since=params.get("IfUnmodifiedSince"),
    )


def _not_modified(info: ObjectInfo) -> dict[str, Any]:
    return {STATUS_KEY: 304, "ETag": info.etag, "LastModified": info.last_modified}


def _part_number(params: dict[str, Any]) -> int | None:
    part = params.get("PartNumber")
    if part is not None and not 1 <= part <= MAX_PART_NUMBER:
        raise errors.invalid_part_number_argument(part)
    return part


def _describe(info: ObjectInfo, span: tuple[int, int] | None, part: int | None,
              params: dict[str, Any]) -> dict[str, Any]:
    result = object_headers(info)
    if span is not None:
        result[STATUS_KEY] = 206
        result["ContentRange"] = ranges.content_range(span, info.size)
        result["ContentLength"] = span[1] - span[0] + 1
    if part is not None:
        result["PartsCount"] = info.parts_count or 1
    elif span is None and params.get("ChecksumMode") == "ENABLED":
        # Only a whole-object read can be checked against the whole-object checksum.
        result.update(checksum_members(info.checksums, info.checksum_type))
    apply_response_overrides(result, params)
    return result


def _invalid_range(error: AwsError) -> AwsError:
    if error.code == "InvalidRange":
        size = error.extra.get("ActualObjectSize", "*")
        error.headers.setdefault("Content-Range", f"bytes */{size}")
    return error


def _read_object(ctx: RequestContext, params: dict[str, Any], with_body: bool) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    st = store(ctx)
    bucket, key = params["Bucket"], params["Key"]
    byte_range = ranges.parse_range_header(params.get("Range"))
    part = _part_number(params)
    conditional = any(params.get(name) is not None for name in _CONDITIONS)
    if conditional:
        current = st.head_object(bucket, key)
        if _check_conditions(current, params) is ranges.Condition.NOT_MODIFIED:
            return _not_modified(current)
    if not with_body and byte_range is None and part is None:
        return _describe(st.head_object(bucket, key), None, None, params)
    try:
        body = st.open_object(bucket, key, byte_range, part_number=part)
    except AwsError as error:
        raise _invalid_range(error) from None
    try:
        # The object may have been replaced since the conditions were checked: check what we serve.
        if conditional and _check_conditions(body.info, params) is ranges.Condition.NOT_MODIFIED:
            close_chunks(body.chunks)
            return _not_modified(body.info)
        result = _describe(body.info, body.span, part, params)
    except BaseException:
        close_chunks(body.chunks)
        raise
    if not with_body:
        close_chunks(body.chunks)
    elif result["ContentLength"] <= SMALL_BODY:
        # One chunk at most: read it here, in the handler's thread, rather than hop again to stream it.
        try:
            result["Body"] = b"".join(body.chunks)
        finally:
            close_chunks(body.chunks)
    else:
        result["Body"] = send_chunks(body.chunks)
    return result


@operation("s3")
def get_object(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _read_object(ctx, params, with_body=True)


@operation("s3")
def head_object(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _read_object(ctx, params, with_body=False)


# ---------------------------------------------------------------- deleting


@operation("s3")
def delete_object(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    st = store(ctx)
    bucket, key = params["Bucket"], params["Key"]
    if params.get("IfMatch") is not None:
        info = st.head_object(bucket, key)
        if not ranges.etag_matches(params["IfMatch"], info.etag):
            raise errors.precondition_failed("If-Match")
    st.delete_object(bucket, key)
    tagging.forget_objects(ctx, bucket, [key])
    return {}


@operation("s3")
def delete_objects(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    request = params.get("Delete") or {}
    entries = request.get("Objects") or []
    quiet = bool(request.get("Quiet"))
    if not entries:
        raise errors.malformed_xml()
    failed: list[dict[str, str]] = []
    keys: list[str] = []
    for entry in entries:
        version = entry.get("VersionId")
        if version is not None and version != "null":
            failed.append({"Key": entry["Key"], "VersionId": version, "Code": "NoSuchVersion",
                           "Message": "The specified version does not exist."})
        else:
            keys.append(entry["Key"])
    results = store(ctx).delete_objects(params["Bucket"], keys) if keys else []
    versions = {e["Key"]: e.get("VersionId") for e in entries}
    deleted: list[dict[str, str]] = []
    for result in results:
        if result.error is not None:
            failed.append({"Key": result.key, "Code": result.error.code, "Message": result.error.message})
        elif not quiet:
            item = {"Key": result.key}
            if versions.get(result.key):
                item["VersionId"] = versions[result.key]  # type: ignore[assignment]
            deleted.append(item)
    tagging.forget_objects(ctx, params["Bucket"], [r.key for r in results if r.error is None])
    return {"Deleted": deleted or None, "Errors": failed or None}


# ---------------------------------------------------------------- CopyObject


def check_copy_source(st: ObjectStore, bucket: str, key: str, params: dict[str, Any]) -> None:
    """``x-amz-copy-source-if-*``: every failure is a 412."""
    if not any(params.get(f"CopySource{name}") is not None for name in _CONDITIONS):
        return
    info = st.head_object(bucket, key)
    ranges.check_copy_source_conditions(
        info.etag,
        info.last_modified,
        if_match=params.get("CopySourceIfMatch"),
        if_none_match=params.get("CopySourceIfNoneMatch"),
        if_modified_since=params.get("CopySourceIfModifiedSince"),
        if_unmodified_since=params.get("CopySourceIfUnmodifiedSince"),
    )


@operation("s3")
def copy_object(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_acl(ctx, params)
    check_expected_owner(ctx, params)
    src_bucket, src_key, version = parse_copy_source(params["CopySource"])
    check_version_id(version)
    st = store(ctx)
    directive = params.get("MetadataDirective") or "COPY"
    meta = object_meta(params) if directive == "REPLACE" else None
    tag_directive = params.get("TaggingDirective") or "COPY"
    new_tags = tagging.parse_header(params.get("Tagging")) if tag_directive == "REPLACE" else None
    check_copy_source(st, src_bucket, src_key, params)
    if tag_directive == "COPY":
        new_tags = tagging.object_tags(ctx, st.head_object(src_bucket, src_key)) or None
    info = st.copy_object(src_bucket, src_key, params["Bucket"], params["Key"], meta,
                          checksum_algorithm=params.get("ChecksumAlgorithm"))
    tagging.set_object_tags(ctx, info, new_tags)
    copied = {"ETag": info.etag, "LastModified": info.last_modified,
              **checksum_members(info.checksums, info.checksum_type)}
    return {"CopyObjectResult": copied}


# ---------------------------------------------------------------- object ACLs


@operation("s3")
def get_object_acl(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    st = store(ctx)
    st.head_object(params["Bucket"], params["Key"])
    return private_acl(st.get_bucket(params["Bucket"]).owner)


@operation("s3")
def put_object_acl(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_version_id(params.get("VersionId"))
    check_expected_owner(ctx, params)
    store(ctx).head_object(params["Bucket"], params["Key"])
    check_acl(ctx, params)
    return {}
