"""The one paging-token codec of every service (a wire concern, so it lives with the handlers).

A token is the compact JSON of whatever a listing needs to resume (an offset, a key,
a position), URL-safe base64 without padding: opaque to clients, safe in query
strings and JSON bodies. Each service keeps its own error for a token it did not
issue, so callers pass the error in.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from sagestack.aws.errors import AwsError

T = TypeVar("T")
#: Builds the service's error for a bad token; it receives the token (IAM and S3 quote it back).
InvalidToken = Callable[[str], AwsError]


def encode_token(value: Any) -> str:
    # ensure_ascii: lone surrogates of S3 keys survive as \\udxxx escapes.
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, invalid: InvalidToken, expect: type[T]) -> T:
    """The value :func:`encode_token` encoded, or ``invalid(token)`` if it is not one of ours of type ``expect``."""
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True))
    except (ValueError, binascii.Error, UnicodeError):
        raise invalid(token) from None
    if not isinstance(value, expect) or isinstance(value, bool):
        raise invalid(token)
    return value


def decode_offset(token: str | None, invalid: InvalidToken) -> int:
    """A non-negative position in a listing (0 without a token)."""
    if not token:
        return 0
    offset = decode_token(token, invalid, int)
    if offset < 0:
        raise invalid(token)
    return offset
