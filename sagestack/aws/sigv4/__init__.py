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

By concern: :mod:`.model` (the signed request and its failures),
:mod:`.authorization` (reading the header or presigned query),
:mod:`.canonical` (the canonical request and signature check), :mod:`.v2`
(S3's SigV2 presigned URLs) and :mod:`.errors` (each family's error codes).
"""

from __future__ import annotations

from sagestack.aws.sigv4.authorization import parse
from sagestack.aws.sigv4.canonical import check_payload_hash, needs_payload_hash, sign, signing_key, verify
from sagestack.aws.sigv4.errors import to_aws_error
from sagestack.aws.sigv4.model import (
    ALGORITHM,
    EMPTY_SHA256,
    FAMILIES,
    MAX_PRESIGN_EXPIRES,
    MAX_SKEW,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthFailure,
    AuthFailureKind,
    SignedRequest,
)

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "FAMILIES",
    "MAX_PRESIGN_EXPIRES",
    "MAX_SKEW",
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
