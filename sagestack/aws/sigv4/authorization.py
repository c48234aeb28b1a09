"""Reading a request's authentication: the Authorization header, or a presigned query.

A client repeats its credential scope, signed-header list and timestamp on many
requests: what those strings parse to is cached per distinct string.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import unquote

from sagestack.aws.sigv4 import v2
from sagestack.aws.sigv4.model import (
    ALGORITHM,
    MAX_PRESIGN_EXPIRES,
    PAYLOAD_LITERALS,
    TIMESTAMP_FORMAT,
    UNSIGNED_PAYLOAD,
    AuthFailure,
    AuthFailureKind,
    SignedRequest,
    is_hex64,
    unsupported_mechanism,
)


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
        return v2.parse_query(raw_query)
    return None


_PRESIGN_MARKERS = ("X-Amz-Signature=", "X-Amz-Credential=", "X-Amz-Algorithm=")


def _looks_presigned(raw_query: str) -> bool:
    # A substring test first: nearly every request has no X-Amz-* query at all.
    if "X-Amz-" not in raw_query:
        return False
    return any(marker in raw_query for marker in _PRESIGN_MARKERS)


def _parse_header_auth(auth: str, headers: Mapping[str, str]) -> SignedRequest:
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":  # SigV2, still sent by some old S3 tools
            raise unsupported_mechanism(presigned=False)
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
    return parsed.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


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
    if value is None or value in PAYLOAD_LITERALS or is_hex64(value):
        return value
    raise AuthFailure(
        AuthFailureKind.MALFORMED,
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
        "or a valid sha256 value.",
        presigned=presigned,
        s3_code="InvalidArgument",
    )


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
    if not is_hex64(signature):
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
