"""Validation of bucket names, object keys and user metadata, as S3 applies it."""

from __future__ import annotations

import ipaddress
import re

from sagestack.storage import errors

# Lowercase letters, digits, dots and hyphens; starts and ends with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def is_valid_bucket_name(name: str) -> bool:
    """The rules for general purpose buckets (not the legacy us-east-1 ones)."""
    if not _BUCKET_RE.match(name) or ".." in name:
        return False
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False


def check_bucket_name(name: str) -> None:
    if not is_valid_bucket_name(name):
        raise errors.invalid_bucket_name(name)


def encode_key(key: str) -> bytes:
    """The UTF-8 bytes stored for a key; longer than 1024 bytes -> KeyTooLongError.

    ``surrogatepass`` keeps a key that is not valid Unicode from crashing the
    server; such a key still round-trips through :func:`decode_key`.
    """
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) > errors.MAX_KEY_BYTES:
        raise errors.key_too_long(len(raw))
    return raw


def decode_key(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def user_metadata_size(user: dict[str, str]) -> int:
    """S3 counts the UTF-8 bytes of every user-metadata name and value (without ``x-amz-meta-``)."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in user.items())


def check_user_metadata(user: dict[str, str]) -> None:
    size = user_metadata_size(user)
    if size > errors.MAX_USER_METADATA_BYTES:
        raise errors.metadata_too_large(size)
