"""The error AWS itself returns for an authentication failure, per protocol family."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sagestack.aws.errors import AwsError
from sagestack.aws.sigv4.model import FAMILIES, MAX_SKEW, TIMESTAMP_FORMAT, AuthFailure, AuthFailureKind

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
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


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
