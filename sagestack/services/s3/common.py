"""What every S3 handler shares: the store, owners, object headers, checksums, ACL rules, encodings."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote_plus, unquote

from anyio import to_thread

from sagestack.aws.chunked import strip_aws_chunked
from sagestack.aws.errors import AwsError
from sagestack.aws.values import WireValueError, format_timestamp, parse_timestamp
from sagestack.services.context import RequestContext
from sagestack.storage.api import DEFAULT_CONTENT_TYPE, ObjectInfo, ObjectMeta, ObjectStore

T = TypeVar("T")

STORAGE_CLASS = "STANDARD"
MAX_PART_NUMBER = 10000

#: Engine algorithm name -> the botocore member carrying its value.
CHECKSUM_MEMBERS = {
    "CRC32": "ChecksumCRC32",
    "CRC32C": "ChecksumCRC32C",
    "CRC64NVME": "ChecksumCRC64NVME",
    "SHA1": "ChecksumSHA1",
    "SHA256": "ChecksumSHA256",
}
#: Checksums the model knows but the store cannot compute: refused rather than silently ignored.
_UNSUPPORTED_CHECKSUMS = ("ChecksumSHA512", "ChecksumMD5", "ChecksumXXHASH64", "ChecksumXXHASH3",
                          "ChecksumXXHASH128")
_CHECKSUM_TRAILER = "x-amz-checksum-"


def store(ctx: RequestContext) -> ObjectStore:
    return ctx.platform.storage


async def run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking store or disk work in the thread pool."""
    return await to_thread.run_sync(partial(func, *args, **kwargs))


# ---------------------------------------------------------------- owners and permissions


def canonical_id(account_id: str) -> str:
    """S3 names owners by a 64-hex-digit canonical user id; ours is derived from the account."""
    return hashlib.sha256(f"sagestack-canonical-user:{account_id}".encode()).hexdigest()


def owner(account_id: str) -> dict[str, str]:
    return {"ID": canonical_id(account_id), "DisplayName": account_id}


def access_denied(message: str = "Access Denied") -> AwsError:
    return AwsError("AccessDenied", message, 403)


def not_implemented(message: str) -> AwsError:
    return AwsError("NotImplemented", message, 501, sender_fault=False)


def check_expected_owner(ctx: RequestContext, params: dict[str, Any]) -> None:
    """``x-amz-expected-bucket-owner``: a bucket of another account is a 403, as in S3."""
    expected = params.get("ExpectedBucketOwner")
    if expected is not None and store(ctx).get_bucket(params["Bucket"]).owner != expected:
        raise access_denied()


def check_version_id(version_id: str | None) -> None:
    """Buckets are never versioned: the only version an object has is ``null``."""
    if version_id is not None and version_id != "null":
        raise AwsError("InvalidArgument", "Invalid version id specified", 400,
                       extra={"ArgumentName": "versionId", "ArgumentValue": version_id})


# Canned ACLs that grant nothing beyond the owning account (for the bucket-owner-* ones, the
# object writer and the bucket owner are the same account here).
_PRIVATE_CANNED = {"private", "bucket-owner-full-control", "bucket-owner-read"}
_GRANT_MEMBERS = ("GrantFullControl", "GrantRead", "GrantReadACP", "GrantWrite", "GrantWriteACP")
_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"?([^",]*)"?\s*(?:,|$)')


def public_acl_refused() -> AwsError:
    return access_denied(
        "sagestack does not support public or cross-account ACLs: every bucket and object stays "
        "private to its account (as with S3 Block Public Access). Only the owner's private ACL is accepted."
    )


def check_acl(ctx: RequestContext, params: dict[str, Any]) -> None:
    """Accept the owner's private ACL in any of its forms; refuse anything that would open access."""
    acl = params.get("ACL")
    if acl is not None and acl not in _PRIVATE_CANNED:
        raise public_acl_refused()
    mine = canonical_id(ctx.account_id)
    for member in _GRANT_MEMBERS:
        value = params.get(member)
        if value is None:
            continue
        grants = _GRANTEE.findall(value)
        if not grants or any(kind != "id" or grantee != mine for kind, grantee in grants):
            raise public_acl_refused()
    policy = params.get("AccessControlPolicy")
    if policy:
        for grant in policy.get("Grants") or []:
            grantee = grant.get("Grantee") or {}
            if grantee.get("Type") != "CanonicalUser" or grantee.get("ID") != mine:
                raise public_acl_refused()


def private_acl(account_id: str) -> dict[str, Any]:
    me = owner(account_id)
    return {
        "Owner": me,
        "Grants": [{"Grantee": {**me, "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"}],
    }


# ---------------------------------------------------------------- object metadata


def object_meta(params: dict[str, Any]) -> ObjectMeta:
    """The headers a PUT / CreateMultipartUpload / CopyObject (REPLACE) stores with the object."""
    encoding = params.get("ContentEncoding")
    if encoding is not None:
        # aws-chunked describes this request's framing, not the object.
        encoding = strip_aws_chunked(encoding) or None
    expires = params.get("Expires")
    return ObjectMeta(
        content_type=params.get("ContentType") or DEFAULT_CONTENT_TYPE,
        content_encoding=encoding,
        content_disposition=params.get("ContentDisposition"),
        content_language=params.get("ContentLanguage"),
        cache_control=params.get("CacheControl"),
        expires=format_timestamp(expires, "rfc822") if isinstance(expires, datetime) else expires,
        user=dict(params.get("Metadata") or {}),
    )


def _expires(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except WireValueError:
        return None  # a value we cannot express in the header's type is left out


def object_headers(info: ObjectInfo) -> dict[str, Any]:
    """The response members describing an object (GetObject / HeadObject)."""
    meta = info.meta
    return {
        "ETag": info.etag,
        "LastModified": info.last_modified,
        "ContentLength": info.size,
        "ContentType": meta.content_type,
        "ContentEncoding": meta.content_encoding,
        "ContentDisposition": meta.content_disposition,
        "ContentLanguage": meta.content_language,
        "CacheControl": meta.cache_control,
        "Expires": _expires(meta.expires),
        "Metadata": dict(meta.user) or None,
        "AcceptRanges": "bytes",
    }


_OVERRIDES = {
    "ResponseContentType": "ContentType",
    "ResponseContentLanguage": "ContentLanguage",
    "ResponseExpires": "Expires",
    "ResponseCacheControl": "CacheControl",
    "ResponseContentDisposition": "ContentDisposition",
    "ResponseContentEncoding": "ContentEncoding",
}


def apply_response_overrides(result: dict[str, Any], params: dict[str, Any]) -> None:
    """``response-content-type=...`` etc. on a GET replace the stored headers in this response only."""
    for query_member, header_member in _OVERRIDES.items():
        value = params.get(query_member)
        if value is not None:
            result[header_member] = value


# ---------------------------------------------------------------- checksums


def header_checksums(params: dict[str, Any]) -> dict[str, str]:
    """``x-amz-checksum-<alg>`` values sent as headers: algorithm -> base64."""
    for member in _UNSUPPORTED_CHECKSUMS:
        if params.get(member):
            raise AwsError(
                "InvalidRequest",
                "Checksum algorithm provided is unsupported. Please try again with any of the valid "
                "types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
            )
    return {alg: params[m] for alg, m in CHECKSUM_MEMBERS.items() if params.get(m)}


def trailer_checksums(trailers: dict[str, str]) -> dict[str, str]:
    """The same, sent as aws-chunked trailing headers."""
    return {
        name[len(_CHECKSUM_TRAILER):].upper(): value
        for name, value in trailers.items()
        if name.startswith(_CHECKSUM_TRAILER) and value
    }


def checksum_members(checksums: dict[str, str], checksum_type: str | None = None) -> dict[str, str]:
    """Stored checksums as response members (``ChecksumCRC32``...), plus ``ChecksumType``."""
    out = {CHECKSUM_MEMBERS[a]: v for a, v in checksums.items() if a in CHECKSUM_MEMBERS}
    if out and checksum_type:
        out["ChecksumType"] = checksum_type
    return out


def requested_algorithms(params: dict[str, Any], *extra: str | None) -> set[str]:
    """Algorithms to compute while a body streams in (anything missed is recomputed from disk)."""
    names = set(header_checksums(params))
    for name in (params.get("ChecksumAlgorithm"), *extra):
        if name:
            names.add(name.upper())
    return names


# ---------------------------------------------------------------- listing encodings


def url_encoder(params: dict[str, Any]) -> Callable[[str | None], str | None]:
    """``encoding-type=url``: keys go out percent-encoded (spaces as ``+``), as S3 does.

    botocore asks for this on every listing and decodes with ``unquote_plus``,
    so keys with characters XML cannot carry still round-trip.
    """
    if params.get("EncodingType") != "url":
        return lambda value: value

    def encode(value: str | None) -> str | None:
        if value is None:
            return None
        return quote_plus(value.encode("utf-8", "surrogatepass"), safe="/")

    return encode


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """``x-amz-copy-source``: ``[/]bucket/key[?versionId=...]``, URL-encoded -> (bucket, key, version)."""
    raw, _, query = value.partition("?")
    version = None
    if query.startswith("versionId="):
        version = unquote(query[len("versionId="):])
    bucket, _, key = unquote(raw).lstrip("/").partition("/")
    if not bucket or not key:
        raise AwsError(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            400,
            extra={"ArgumentName": "x-amz-copy-source", "ArgumentValue": value},
        )
    return bucket, key, version
