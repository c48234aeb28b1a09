"""What a signed request carries, and the ways it can fail to authenticate."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_LITERALS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)

MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 604800  # one week: the lifetime of a derived signing key
FAMILIES = ("json", "query", "rest-json", "s3")
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

_HEX = frozenset("0123456789abcdef")


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
        if value is None or value in PAYLOAD_LITERALS:
            return None
        return value


def unsupported_mechanism(presigned: bool) -> AuthFailure:
    return AuthFailure(
        AuthFailureKind.MALFORMED,
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        presigned=presigned,
        s3_code="InvalidRequest",
    )


def is_hex64(value: str) -> bool:
    return len(value) == 64 and _HEX.issuperset(value)
