"""Server-side verification of AWS Signature Version 4.

The client (botocore, the AWS CLI, the SageMaker SDK) signs a *canonical
request*; we rebuild that exact string from what arrived on the wire and check
the HMAC. Everything here is pure: no I/O, no key store. The caller looks up
the secret for ``SignedRequest.access_key_id`` and decides what a failure
means for its protocol via :func:`to_aws_error`.

Flow for one request::

    req = parse(method, raw_path, raw_query, headers)     # None: anonymous
    key = verify(req, ..., secret_key=..., now=..., service_family=...)
    # S3 streaming bodies: chunked.decoder_for_request(req, key, headers)

Canonicalization follows botocore's ``SigV4Auth`` family byte for byte; the
few places where other SDKs encode differently are tried as fallbacks only
after the botocore form fails, so the happy path does one HMAC.

S3 presigned URLs in SigV2 form are verified too: boto3 still makes those by
default for S3 in regions that accept SigV2, us-east-1 included.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote

from sagestack.aws.errors import AwsError

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_PAYLOAD_LITERALS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)

MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 604800  # one week: the lifetime of a derived signing key
FAMILIES = ("json", "query", "rest-json", "s3")

_HEX = frozenset("0123456789abcdef")
_TIMESTAMP_FMT = "%Y%m%dT%H%M%SZ"
# RFC 3986 unreserved characters: the only ones SigV4 leaves unencoded.
_QUERY_SAFE = "-_.~"
_PATH_SAFE = "/~"


class AuthFailureKind(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    SKEWED = "skewed"
    PRESIGN_EXPIRED = "presign_expired"
    EXPIRED_TOKEN = "expired_token"
    BAD_TOKEN = "bad_token"
    PAYLOAD_HASH_MISMATCH = "payload_hash_mismatch"
    #: S3 only: x-amz-* headers were sent that the signature does not cover.
    UNSIGNED_HEADERS = "unsigned_headers"


@dataclass(eq=False)
class AuthFailure(Exception):
    """Why a request is not authenticated; :func:`to_aws_error` renders it per protocol.

    The optional fields feed the diagnostic members AWS puts in its errors
    (the canonical request on a bad signature, the server time on skew, ...).
    """

    kind: AuthFailureKind
    detail: str = ""
    presigned: bool = False
    access_key_id: str | None = None
    timestamp: str | None = None  # the request's X-Amz-Date, as sent
    server_time: datetime | None = None
    expires: int | None = None
    expires_at: datetime | None = None
    signature_provided: str | None = None
    canonical_request: str | None = None
    string_to_sign: str | None = None
    client_sha256: str | None = None
    server_sha256: str | None = None
    unsigned_headers: tuple[str, ...] = ()
    #: S3 uses dedicated codes for some malformed requests (InvalidRequest, InvalidArgument).
    s3_code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(f"{self.kind.name}: {self.detail}")


@dataclass(slots=True)
class SignedRequest:
    access_key_id: str
    date: str  # YYYYMMDD, from the credential scope
    region: str
    service: str  # signing name from the scope, e.g. "s3", "sagemaker"
    signed_headers: list[str]
    signature: str  # lowercase hex
    amz_date: datetime  # aware, UTC
    presigned: bool
    expires: int | None = None
    session_token: str | None = None
    content_sha256: str | None = None
    #: X-Amz-Date exactly as sent: it is what the string-to-sign (and chunk signatures) use.
    timestamp: str = ""
    #: 4, or 2 for an S3 SigV2 presigned URL (``AWSAccessKeyId=…&Signature=…&Expires=…``), which
    #: boto3 still produces by default in regions that accept SigV2 (us-east-1 among them). For
    #: those, date/region are empty, ``amz_date`` is the expiry instant and ``expires`` is 0.
    version: int = 4

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @property
    def streaming(self) -> bool:
        """The body is aws-chunked framed (see :mod:`sagestack.aws.chunked`)."""
        return self.content_sha256 is not None and self.content_sha256.startswith("STREAMING-")

    @property
    def declared_sha256(self) -> str | None:
        """The body hash the client declared and signed, which the body must then match."""
        value = self.content_sha256
        if value is None or value in _PAYLOAD_LITERALS:
            return None
        return value


# --------------------------------------------------------------------------- parse


def parse(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> SignedRequest | None:
    """Extract the signing parameters of a request; None when it carries no authentication.

    ``headers`` must be lowercase-keyed. Raises :class:`AuthFailure` (MALFORMED)
    when authentication is present but unusable. Nothing here depends on
    ``method`` yet; it is taken so parse and verify see the same request.
    """
    auth = headers.get("authorization")
    presigned = _looks_presigned(raw_query)
    v2_presigned = not presigned and "AWSAccessKeyId=" in raw_query and "Signature=" in raw_query
    if auth is not None and (presigned or v2_presigned):
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            s3_code="InvalidArgument",
        )
    if auth is not None:
        return _parse_header_auth(auth, headers)
    if presigned:
        return _parse_query_auth(raw_query, headers)
    if v2_presigned:
        return _parse_v2_query(raw_query)
    return None


_PRESIGN_MARKERS = ("X-Amz-Signature=", "X-Amz-Credential=", "X-Amz-Algorithm=")


def _looks_presigned(raw_query: str) -> bool:
    # A substring test first: nearly every request has no X-Amz-* query at all.
    if "X-Amz-" not in raw_query:
        return False
    return any(marker in raw_query for marker in _PRESIGN_MARKERS)


def _unsupported_mechanism(presigned: bool) -> AuthFailure:
    return AuthFailure(
        AuthFailureKind.MALFORMED,
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        presigned=presigned,
        s3_code="InvalidRequest",
    )


def _parse_header_auth(auth: str, headers: Mapping[str, str]) -> SignedRequest:
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":  # SigV2, still sent by some old S3 tools
            raise _unsupported_mechanism(presigned=False)
        raise AuthFailure(AuthFailureKind.MALFORMED, f"Unsupported authorization algorithm '{algorithm}'.")
    params: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise AuthFailure(
                AuthFailureKind.MALFORMED,
                f"'{part.strip()}' not a valid key=value pair (missing equal-sign) in Authorization header.",
            )
        params[name] = value
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if not params.get(p)]
    timestamp = headers.get("x-amz-date") or _date_header_timestamp(headers.get("date"))
    problems = [f"Authorization header requires '{p}' parameter." for p in missing]
    if timestamp is None:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems:
        raise AuthFailure(AuthFailureKind.MALFORMED, " ".join(problems))
    assert timestamp is not None
    return _build(
        params["Credential"],
        params["SignedHeaders"],
        params["Signature"],
        timestamp,
        presigned=False,
        expires=None,
        token=headers.get("x-amz-security-token"),
        content_sha256=_content_sha256(headers.get("x-amz-content-sha256"), presigned=False),
    )


def _date_header_timestamp(value: str | None) -> str | None:
    # botocore signs with the Date header instead of X-Amz-Date when a Date header is already set.
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(_TIMESTAMP_FMT)


_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)


def _parse_query_auth(raw_query: str, headers: Mapping[str, str]) -> SignedRequest:
    params: dict[str, str] = {}
    for piece in raw_query.split("&"):
        name, _, value = piece.partition("=")
        if name.startswith("X-Amz-"):
            params[name] = unquote(value)
    if any(not params.get(p) for p in _QUERY_AUTH_PARAMS):
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
            presigned=True,
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"',
            presigned=True,
        )
    expires = _parse_expires(params["X-Amz-Expires"])
    signed_headers = params["X-Amz-SignedHeaders"]
    # A signed x-amz-content-sha256 header wins (botocore puts it in the canonical request when set);
    # some SDKs send the payload hash as a query parameter instead.
    if "x-amz-content-sha256" in signed_headers.split(";"):
        content = headers.get("x-amz-content-sha256")
    else:
        content = params.get("X-Amz-Content-Sha256") or UNSIGNED_PAYLOAD
    return _build(
        params["X-Amz-Credential"],
        signed_headers,
        params["X-Amz-Signature"],
        params["X-Amz-Date"],
        presigned=True,
        expires=expires,
        token=params.get("X-Amz-Security-Token") or headers.get("x-amz-security-token"),
        content_sha256=_content_sha256(content, presigned=True),
    )


def _parse_expires(value: str) -> int:
    # isdigit() first: int() would also take "+5", " 5" and "5_0".
    expires = int(value) if value.isascii() and value.isdigit() else -1
    if expires < 0:
        detail = "X-Amz-Expires must be non-negative"
    elif expires > MAX_PRESIGN_EXPIRES:
        detail = "X-Amz-Expires must be less than a week (in seconds) that is; 604800"
    elif expires == 0:
        detail = "X-Amz-Expires must be at least 1 second"
    else:
        return expires
    raise AuthFailure(AuthFailureKind.MALFORMED, detail, presigned=True)


def _content_sha256(value: str | None, presigned: bool) -> str | None:
    if value is None or value in _PAYLOAD_LITERALS or _is_hex64(value):
        return value
    raise AuthFailure(
        AuthFailureKind.MALFORMED,
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
        "or a valid sha256 value.",
        presigned=presigned,
        s3_code="InvalidArgument",
    )


def _is_hex64(value: str) -> bool:
    return len(value) == 64 and _HEX.issuperset(value)


def _build(
    credential: str,
    signed_headers: str,
    signature: str,
    timestamp: str,
    *,
    presigned: bool,
    expires: int | None,
    token: str | None,
    content_sha256: str | None,
) -> SignedRequest:
    parts = _credential_parts(credential)
    if parts is None:
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
            presigned=presigned,
        )
    signature = signature.lower()
    if not _is_hex64(signature):
        raise AuthFailure(
            AuthFailureKind.MALFORMED, "the Signature is not a 64-digit hex string.", presigned=presigned
        )
    names = _signed_header_names(signed_headers)
    if "host" not in names:
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            presigned=presigned,
        )
    amz_date = _parse_timestamp(timestamp, presigned)
    if timestamp[:8] != parts[1]:
        raise AuthFailure(
            AuthFailureKind.MALFORMED,
            f'Invalid credential date. Date is not the same as X-Amz-Date: "{parts[1]}".',
            presigned=presigned,
        )
    return SignedRequest(
        access_key_id=parts[0],
        date=parts[1],
        region=parts[2],
        service=parts[3],
        signed_headers=list(names),
        signature=signature,
        amz_date=amz_date,
        presigned=presigned,
        expires=expires,
        session_token=token or None,
        content_sha256=content_sha256,
        timestamp=timestamp,
    )


# A client repeats its credential scope and signed-header list on every request of a day:
# what they parse to is worked out once per distinct string.
@lru_cache(maxsize=1024)
def _credential_parts(credential: str) -> tuple[str, ...] | None:
    parts = tuple(credential.split("/"))
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts) or not _is_date(parts[1]):
        return None
    return parts


@lru_cache(maxsize=1024)
def _signed_header_names(signed_headers: str) -> tuple[str, ...]:
    return tuple(signed_headers.split(";"))


def _is_date(value: str) -> bool:
    return len(value) == 8 and value.isascii() and value.isdigit()


def _parse_timestamp(value: str, presigned: bool) -> datetime:
    parsed = _timestamp(value)
    if parsed is None:
        name = "X-Amz-Date" if presigned else "x-amz-date"
        raise AuthFailure(
            AuthFailureKind.MALFORMED, f"Invalid date format of header: {name}.", presigned=presigned
        )
    return parsed


@lru_cache(maxsize=64)  # timestamps have one-second resolution: a busy client repeats each many times
def _timestamp(value: str) -> datetime | None:
    # Sliced by hand: strptime is several times slower.
    if len(value) == 16 and value[8] == "T" and value[15] == "Z" and value.isascii():
        digits = value[:8] + value[9:15]
        if digits.isdigit():
            try:
                return datetime(
                    int(value[0:4]), int(value[4:6]), int(value[6:8]),
                    int(value[9:11]), int(value[11:13]), int(value[13:15]), tzinfo=UTC,
                )  # fmt: skip
            except ValueError:
                pass
    return None


# --------------------------------------------------------------------------- verify


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
        _verify_v2(req, method, raw_path, raw_query, headers, secret_key, service_family)
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


# --------------------------------------------------------------------------- SigV2 presigned URLs
#
# botocore's HmacV1QueryAuth: HMAC-SHA1 over method, Content-MD5, Content-Type, the absolute
# expiry, the x-amz-* headers and the path plus a fixed set of S3 sub-resources. Only S3 ever
# produces these, and only as presigned URLs.

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


def _parse_v2_query(raw_query: str) -> SignedRequest:
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


def _verify_v2(
    req: SignedRequest,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_key: str,
    service_family: str,
) -> None:
    if service_family != "s3":
        raise _unsupported_mechanism(presigned=True)
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


# --------------------------------------------------------------------------- errors

_S3_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_INVALID_TOKEN = "The security token included in the request is invalid."
_EXPIRED_TOKEN = "The security token included in the request is expired"


@dataclass(frozen=True)
class _Codes:
    missing: tuple[str, str]
    malformed: str
    unknown_key: str
    bad_signature: str
    expired_token: str


_CODES = {
    "query": _Codes(
        ("MissingAuthenticationToken", "Request is missing Authentication Token"),
        "IncompleteSignature",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
    ),
    "json": _Codes(
        ("MissingAuthenticationTokenException", "Missing Authentication Token"),
        "IncompleteSignatureException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    ),
}
_CODES["rest-json"] = _CODES["json"]


def to_aws_error(failure: AuthFailure, family: str) -> AwsError:
    """The error AWS itself returns for this failure in a protocol family.

    ``family``: "json", "query", "rest-json" or "s3". Everything is 403 except
    malformed requests (400, as AWS) and S3's body-hash mismatch (400, as AWS:
    it is a corrupt body rather than an identity problem).
    """
    if family == "s3":
        return _s3_error(failure)
    codes = _CODES.get(family)
    if codes is None:
        raise ValueError(f"unknown protocol family {family!r}; expected one of {FAMILIES}")
    return _service_error(failure, codes)


def _service_error(failure: AuthFailure, codes: _Codes) -> AwsError:
    kind = failure.kind
    if kind is AuthFailureKind.MISSING:
        return AwsError(codes.missing[0], codes.missing[1], 403)
    if kind is AuthFailureKind.MALFORMED:
        return AwsError(codes.malformed, failure.detail, 400)
    if kind in (AuthFailureKind.UNKNOWN_KEY, AuthFailureKind.BAD_TOKEN):
        return AwsError(codes.unknown_key, _INVALID_TOKEN, 403)
    if kind is AuthFailureKind.EXPIRED_TOKEN:
        return AwsError(codes.expired_token, _EXPIRED_TOKEN, 403)
    if kind in (AuthFailureKind.SKEWED, AuthFailureKind.PRESIGN_EXPIRED):
        return AwsError(codes.bad_signature, _expired_message(failure), 403)
    return AwsError(codes.bad_signature, _bad_signature_message(failure), 403)


def _bad_signature_message(failure: AuthFailure) -> str:
    if failure.canonical_request is None:
        return _BAD_SIGNATURE
    # AWS appends what it signed so a client author can diff it against their own.
    return (
        f"{_BAD_SIGNATURE}\n\nThe Canonical String for this request should have been\n"
        f"'{failure.canonical_request}'\n\nThe String-to-Sign should have been\n'{failure.string_to_sign}'\n"
    )


def _expired_message(failure: AuthFailure) -> str:
    now = failure.server_time or datetime.now(UTC)
    stamp = failure.timestamp or ""
    if failure.kind is AuthFailureKind.PRESIGN_EXPIRED and failure.expires is not None:
        window = timedelta(seconds=failure.expires)
        label = f"{failure.expires // 60} min." if failure.expires % 60 == 0 else f"{failure.expires} sec."
    else:
        window, label = MAX_SKEW, "15 min."
    if failure.kind is AuthFailureKind.SKEWED and stamp > _fmt(now):
        limit = _fmt(now + window)
        return f"Signature not yet current: {stamp} is still later than {limit} ({_fmt(now)} + {label})"
    return f"Signature expired: {stamp} is now earlier than {_fmt(now - window)} ({_fmt(now)} - {label})"


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FMT)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _s3_error(failure: AuthFailure) -> AwsError:
    kind = failure.kind
    key_extra = {"AWSAccessKeyId": failure.access_key_id} if failure.access_key_id else {}
    if kind is AuthFailureKind.MISSING:
        return AwsError("AccessDenied", "Access Denied", 403)
    if kind is AuthFailureKind.MALFORMED:
        return _s3_malformed(failure)
    if kind is AuthFailureKind.UNKNOWN_KEY:
        message = "The AWS Access Key Id you provided does not exist in our records."
        return AwsError("InvalidAccessKeyId", message, 403, extra=key_extra)
    if kind is AuthFailureKind.BAD_SIGNATURE:
        return AwsError(
            "SignatureDoesNotMatch", _S3_BAD_SIGNATURE, 403, extra={**key_extra, **_sig_extra(failure)}
        )
    if kind is AuthFailureKind.SKEWED:
        return AwsError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            403,
            extra=_skew_extra(failure),
        )
    if kind is AuthFailureKind.PRESIGN_EXPIRED:
        return AwsError("AccessDenied", "Request has expired", 403, extra=_presign_extra(failure))
    if kind is AuthFailureKind.EXPIRED_TOKEN:
        return AwsError("ExpiredToken", "The provided token has expired.", 403)
    if kind is AuthFailureKind.BAD_TOKEN:
        return AwsError("InvalidToken", "The provided token is malformed or otherwise invalid.", 403)
    if kind is AuthFailureKind.UNSIGNED_HEADERS:
        return AwsError(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            403,
            extra={"HeadersNotSigned": ", ".join(failure.unsigned_headers)},
        )
    return AwsError(
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
        400,
        extra={
            "ClientComputedContentSHA256": failure.client_sha256 or "",
            "S3ComputedContentSHA256": failure.server_sha256 or "",
        },
    )


def _s3_malformed(failure: AuthFailure) -> AwsError:
    if failure.s3_code is not None:
        return AwsError(failure.s3_code, failure.detail, 400)
    if failure.presigned:
        return AwsError("AuthorizationQueryParametersError", failure.detail, 400)
    message = f"The authorization header is malformed; {failure.detail}"
    return AwsError("AuthorizationHeaderMalformed", message, 400)


def _sig_extra(failure: AuthFailure) -> dict[str, str]:
    extra = {}
    if failure.string_to_sign is not None:
        extra["StringToSign"] = failure.string_to_sign
    if failure.signature_provided is not None:
        extra["SignatureProvided"] = failure.signature_provided
    if failure.canonical_request is not None:
        extra["CanonicalRequest"] = failure.canonical_request
    return extra


def _skew_extra(failure: AuthFailure) -> dict[str, str]:
    now = failure.server_time or datetime.now(UTC)
    return {
        "RequestTime": failure.timestamp or "",
        "ServerTime": _iso(now),
        "MaxAllowedSkewMilliseconds": str(int(MAX_SKEW.total_seconds() * 1000)),
    }


def _presign_extra(failure: AuthFailure) -> dict[str, str]:
    extra = {}
    if failure.expires is not None:  # SigV2 URLs carry an absolute expiry only
        extra["X-Amz-Expires"] = str(failure.expires)
    if failure.expires_at is not None:
        extra["Expires"] = _iso(failure.expires_at)
    extra["ServerTime"] = _iso(failure.server_time or datetime.now(UTC))
    return extra


__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthFailure",
    "AuthFailureKind",
    "SignedRequest",
    "check_payload_hash",
    "needs_payload_hash",
    "parse",
    "sign",
    "signing_key",
    "to_aws_error",
    "verify",
]
