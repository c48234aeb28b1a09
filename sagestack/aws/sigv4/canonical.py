"""Verifying a SigV4 signature: the canonical request, the string to sign, the clock.

Canonicalization follows botocore's ``SigV4Auth`` family byte for byte; the
few places where other SDKs encode differently are tried as fallbacks only
after the botocore form fails, so the happy path does one HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote, unquote

from sagestack.aws.sigv4 import v2
from sagestack.aws.sigv4.model import (
    ALGORITHM,
    EMPTY_SHA256,
    MAX_SKEW,
    UNSIGNED_PAYLOAD,
    AuthFailure,
    AuthFailureKind,
    SignedRequest,
)

# RFC 3986 unreserved characters: the only ones SigV4 leaves unencoded.
_QUERY_SAFE = "-_.~"
_PATH_SAFE = "/~"


@lru_cache(maxsize=512)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key; cached because every request of a day repeats the same four HMACs."""
    k = hmac.digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
    k = hmac.digest(k, region.encode(), "sha256")
    k = hmac.digest(k, service.encode(), "sha256")
    return hmac.digest(k, b"aws4_request", "sha256")


def sign(key: bytes, string_to_sign: str) -> str:
    return hmac.digest(key, string_to_sign.encode(), "sha256").hex()


def needs_payload_hash(req: SignedRequest, headers: Mapping[str, str], service_family: str) -> bool:
    """Whether :func:`verify` needs ``payload_hash`` (sha256 of the body) for this request.

    True for non-S3 requests that sign the body without sending
    x-amz-content-sha256 (botocore's json/query/rest-json calls); S3 never
    needs it from botocore, which always sends the header.
    """
    if req.presigned:
        return service_family != "s3" and "x-amz-content-sha256" not in req.signed_headers
    return "x-amz-content-sha256" not in headers


def verify(
    req: SignedRequest,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_key: str,
    now: datetime,
    service_family: str,
    payload_hash: str | None = None,
) -> bytes:
    """Check the signature and the clock; return the signing key (chunk signatures chain from it).

    ``raw_path`` and ``raw_query`` are exactly as received (still
    percent-encoded); ``headers`` are lowercase-keyed, decoded as latin-1.
    ``payload_hash`` is the hex sha256 of the body, used only when the client
    did not send x-amz-content-sha256 (see :func:`needs_payload_hash`); None
    means an empty body.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    _check_time(req, now)
    if req.version == 2:
        v2.verify(req, method, raw_path, raw_query, headers, secret_key, service_family)
        return b""  # SigV2 has no derived key, and a presigned body is never chunk-signed
    key = signing_key(secret_key, req.date, req.region, req.service)
    s3 = service_family == "s3"
    if s3:
        _check_amz_headers_signed(req, headers)
    payload = _payload_line(req, headers, s3, payload_hash)
    header_block = _canonical_headers(req.signed_headers, headers)
    signed = ";".join(req.signed_headers)
    prefix = f"{ALGORITHM}\n{req.timestamp}\n{req.scope}\n"
    first: tuple[str, str] | None = None
    for path, query in _canonical_targets(raw_path, raw_query, s3, req.presigned):
        canonical = f"{method.upper()}\n{path}\n{query}\n{header_block}\n\n{signed}\n{payload}"
        string_to_sign = prefix + hashlib.sha256(canonical.encode()).hexdigest()
        if hmac.compare_digest(sign(key, string_to_sign), req.signature):
            return key
        if first is None:
            first = (canonical, string_to_sign)
    assert first is not None
    raise AuthFailure(
        AuthFailureKind.BAD_SIGNATURE,
        "signature mismatch",
        presigned=req.presigned,
        access_key_id=req.access_key_id,
        signature_provided=req.signature,
        canonical_request=first[0],
        string_to_sign=first[1],
    )


def check_payload_hash(req: SignedRequest, body_sha256: str) -> None:
    """After reading a body whose hash the client declared, make sure it is the body we got."""
    declared = req.declared_sha256
    if declared is not None and not hmac.compare_digest(declared, body_sha256):
        raise AuthFailure(
            AuthFailureKind.PAYLOAD_HASH_MISMATCH,
            "body does not match x-amz-content-sha256",
            presigned=req.presigned,
            access_key_id=req.access_key_id,
            client_sha256=declared,
            server_sha256=body_sha256,
        )


def _check_time(req: SignedRequest, now: datetime) -> None:
    failure: AuthFailureKind | None = None
    if req.presigned:
        assert req.expires is not None
        # A SigV2 URL carries only its expiry, so there is no issue time to be early against.
        if req.version == 4 and req.amz_date - now > MAX_SKEW:
            failure = AuthFailureKind.SKEWED
        elif now > req.amz_date + timedelta(seconds=req.expires):
            failure = AuthFailureKind.PRESIGN_EXPIRED
    elif abs(now - req.amz_date) > MAX_SKEW:
        failure = AuthFailureKind.SKEWED
    if failure is not None:
        v4 = req.version == 4
        raise AuthFailure(
            failure,
            f"request time {req.timestamp or '-'}, server time {now:%Y%m%dT%H%M%SZ}",
            presigned=req.presigned,
            access_key_id=req.access_key_id,
            timestamp=req.timestamp,
            server_time=now,
            expires=req.expires if v4 else None,
            expires_at=req.amz_date + timedelta(seconds=req.expires or 0) if req.presigned else None,
        )


def _check_amz_headers_signed(req: SignedRequest, headers: Mapping[str, str]) -> None:
    # S3 acts on many x-amz-* headers (x-amz-copy-source, x-amz-acl, ...): one added to a
    # presigned URL must not ride on a signature that never covered it.
    signed = req.signed_headers
    extra = tuple(n for n in headers if n.startswith("x-amz-") and n not in signed)
    if extra:
        raise AuthFailure(
            AuthFailureKind.UNSIGNED_HEADERS,
            f"unsigned headers: {', '.join(extra)}",
            presigned=req.presigned,
            access_key_id=req.access_key_id,
            unsigned_headers=extra,
        )


def _payload_line(req: SignedRequest, headers: Mapping[str, str], s3: bool, payload_hash: str | None) -> str:
    if req.presigned:
        if "x-amz-content-sha256" in req.signed_headers:
            return headers.get("x-amz-content-sha256", "")
        if s3:  # S3SigV4QueryAuth: the body is unknown when the URL is made
            return req.content_sha256 or UNSIGNED_PAYLOAD
        return payload_hash or EMPTY_SHA256
    declared = headers.get("x-amz-content-sha256")
    if declared is not None:
        return declared
    if payload_hash is not None:
        return payload_hash
    if s3:
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            "Missing required header for this request: x-amz-content-sha256",
            access_key_id=req.access_key_id,
            s3_code="InvalidRequest",
        )
    return EMPTY_SHA256


def _canonical_headers(names: list[str], headers: Mapping[str, str]) -> str:
    # Trimall: strip and collapse inner whitespace runs, as botocore's _header_value does.
    return "\n".join([f"{name}:{' '.join(headers.get(name, '').split())}" for name in names])


def _canonical_targets(raw_path: str, raw_query: str, s3: bool, presigned: bool) -> Iterator[tuple[str, str]]:
    """(path, query) candidates: botocore's form first, then other SDKs' encodings.

    Alternates are computed lazily, so a good signature costs one attempt.
    """
    path = _s3_path(raw_path) if s3 else _service_path(raw_path)
    query = _query_as_sent(raw_query, presigned)
    yield path, query
    alt_path = _reencoded_path(raw_path, s3)
    alt_query = _query_reencoded(raw_query, presigned)
    seen = {(path, query)}
    for candidate in ((alt_path, query), (path, alt_query), (alt_path, alt_query)):
        if candidate not in seen:
            seen.add(candidate)
            yield candidate


def _s3_path(raw_path: str) -> str:
    # S3SigV4Auth signs the URL path as sent: no dot-segment removal, no second encoding.
    return raw_path or "/"


@lru_cache(maxsize=4096)  # clients call the same few paths over and over
def _service_path(raw_path: str) -> str:
    # SigV4Auth normalizes the path and then encodes the (already encoded) path again.
    return quote(_remove_dot_segments(raw_path), safe=_PATH_SAFE)


def _reencoded_path(raw_path: str, s3: bool) -> str:
    # Clients that leave reserved characters unencoded on the wire still sign the strict form.
    if s3:
        return quote(unquote(raw_path or "/"), safe=_PATH_SAFE)
    return _remove_dot_segments(raw_path)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal, also dropping empty segments (AWS collapses '//')."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and out else ""
    return lead + "/".join(out) + trail


def _query_as_sent(raw_query: str, presigned: bool) -> str:
    # botocore signs the query exactly as it put it on the wire, only sorted.
    if not raw_query:
        return ""
    pairs = [piece.partition("=")[::2] for piece in raw_query.split("&")]
    if presigned:
        pairs = [p for p in pairs if p[0] != "X-Amz-Signature"]
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def _query_reencoded(raw_query: str, presigned: bool) -> str:
    pairs = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if presigned and name == "X-Amz-Signature":
            continue
        pairs.append((quote(unquote(name), safe=_QUERY_SAFE), quote(unquote(value), safe=_QUERY_SAFE)))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)
