"""S3 presigned URLs in SigV2 form (``AWSAccessKeyId=…&Signature=…&Expires=…``).

boto3 still makes those by default for S3 in regions that accept SigV2,
us-east-1 included. botocore's HmacV1QueryAuth: HMAC-SHA1 over method,
Content-MD5, Content-Type, the absolute expiry, the x-amz-* headers and the path
plus a fixed set of S3 sub-resources. Only S3 ever produces these, and only as
presigned URLs.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from urllib.parse import unquote

from sagestack.aws.sigv4.model import (
    UNSIGNED_PAYLOAD,
    AuthFailure,
    AuthFailureKind,
    SignedRequest,
    unsupported_mechanism,
)

_V2_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber",
        "policy", "requestPayment", "torrent", "versioning", "versionId", "versions", "website",
        "uploads", "uploadId", "response-content-type", "response-content-language",
        "response-expires", "response-cache-control", "response-content-disposition",
        "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass",
        "notification", "replication", "analytics", "metrics", "inventory", "select",
        "select-type", "object-lock",
    }
)  # fmt: skip


def parse_query(raw_query: str) -> SignedRequest:
    params = dict(_split_pairs(raw_query))
    access_key = unquote(params.get("AWSAccessKeyId", ""))
    signature = unquote(params.get("Signature", ""))
    expires = params.get("Expires", "")
    if not (access_key and signature and expires.isascii() and expires.isdigit()):
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
            presigned=True,
        )
    try:
        expires_at = datetime.fromtimestamp(int(expires), UTC)
    except (OverflowError, ValueError, OSError):
        raise AuthFailure(AuthFailureKind.MALFORMED, "Invalid Expires.", presigned=True) from None
    token = params.get("x-amz-security-token")
    return SignedRequest(
        access_key_id=access_key,
        date="",
        region="",
        service="s3",
        signed_headers=[],
        signature=signature,
        amz_date=expires_at,
        presigned=True,
        expires=0,
        session_token=unquote(token) if token else None,
        content_sha256=UNSIGNED_PAYLOAD,
        version=2,
    )


def _split_pairs(raw_query: str) -> Iterator[tuple[str, str]]:
    for piece in raw_query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            yield name, value


def verify(
    req: SignedRequest,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_key: str,
    service_family: str,
) -> None:
    if service_family != "s3":
        raise unsupported_mechanism(presigned=True)
    string_to_sign = _v2_string_to_sign(method, raw_path, raw_query, headers)
    digest = hmac.digest(secret_key.encode(), string_to_sign.encode(), "sha1")
    expected = base64.b64encode(digest).decode()
    if not hmac.compare_digest(expected.encode(), req.signature.encode()):
        raise AuthFailure(
            AuthFailureKind.BAD_SIGNATURE,
            "signature mismatch",
            presigned=True,
            access_key_id=req.access_key_id,
            signature_provided=req.signature,
            string_to_sign=string_to_sign,
        )


def _v2_string_to_sign(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> str:
    query: dict[str, str] = {}
    resources: list[tuple[str, str | None]] = []
    for piece in raw_query.split("&"):
        name, eq, value = piece.partition("=")
        query[name] = unquote(value)
        if name in _V2_SUBRESOURCES:
            # A valueless sub-resource ("?uploads") is signed without "=".
            resources.append((name, unquote(value) if eq else None))
    # The signer moved these headers into the query; a header sent with the request counts too.
    md5 = headers.get("content-md5", query.get("content-md5", "")).strip()
    ctype = headers.get("content-type", query.get("content-type", "")).strip()
    amz = {k: v.strip() for k, v in query.items() if k.startswith("x-amz-")}
    for name, value in headers.items():
        if name.startswith("x-amz-"):
            amz[name] = f"{amz[name]},{value.strip()}" if name in amz else value.strip()
    lines = [method.upper(), md5, ctype, query["Expires"]]
    lines.extend(f"{k}:{v}" for k, v in sorted(amz.items()))
    resources.sort(key=lambda pair: pair[0])  # stable: repeated names keep their order
    resource = raw_path or "/"
    if resources:
        resource += "?" + "&".join(k if v is None else f"{k}={v}" for k, v in resources)
    lines.append(resource)
    return "\n".join(lines)
