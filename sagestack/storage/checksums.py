"""Streaming hashes: MD5 for the ETag and S3's additional checksums.

S3 names the algorithms CRC32, CRC32C, CRC64NVME, SHA1 and SHA256; a checksum
travels as the base64 of the big-endian digest (``x-amz-checksum-crc32: AAAAAA==``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import Protocol

from sagestack.aws.errors import AwsError
from sagestack.storage import crc

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
CRC_ALGORITHMS = frozenset({"CRC32", "CRC32C", "CRC64NVME"})
_DIGEST_SIZES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}
_TABLE_CRCS = {"CRC32": crc.CRC32, "CRC32C": crc.CRC32C, "CRC64NVME": crc.CRC64NVME}


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


class _NativeCrc32c:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        assert crc.NATIVE_CRC32C is not None
        self._crc = crc.NATIVE_CRC32C(bytes(data), self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


class _TableCrc:
    def __init__(self, impl: crc.ReflectedCrc) -> None:
        self._impl = impl
        self._reg = impl.initial()

    def update(self, data: bytes | memoryview) -> None:
        self._reg = self._impl.update_raw(self._reg, data)

    def digest(self) -> bytes:
        return self._impl.finish(self._reg).to_bytes(self._impl.width // 8, "big")


def normalize_algorithm(name: str) -> str:
    """``crc32c`` / ``CRC32C`` -> ``CRC32C``; anything unknown is an InvalidRequest."""
    upper = name.upper()
    if upper not in _DIGEST_SIZES:
        raise AwsError(
            "InvalidRequest",
            "Checksum algorithm provided is unsupported. Please try again with any of the valid types:"
            " [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
        )
    return upper


def new_hasher(algorithm: str) -> Hasher:
    if algorithm == "MD5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "CRC32":
        return _Crc32()
    if algorithm == "CRC32C" and crc.NATIVE_CRC32C is not None:
        return _NativeCrc32c()
    if algorithm in _TABLE_CRCS:
        return _TableCrc(_TABLE_CRCS[algorithm])
    if algorithm == "SHA1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "SHA256":
        return hashlib.sha256()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def encode(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def decode_checksum(algorithm: str, value: str) -> bytes:
    """The raw digest of an ``x-amz-checksum-*`` value; malformed -> InvalidRequest (as S3)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _DIGEST_SIZES[algorithm]:
        raise AwsError("InvalidRequest", f"Value for x-amz-checksum-{algorithm.lower()} header is invalid.")
    return raw


def decode_content_md5(value: str) -> bytes:
    """The raw digest of a Content-MD5 header; malformed -> InvalidDigest."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise AwsError(
            "InvalidDigest", "The Content-MD5 you specified is not valid.", 400, extra={"Content-MD5": value}
        )
    return raw


def composite(algorithm: str, part_digests: list[bytes]) -> str:
    """A COMPOSITE multipart checksum: the checksum of the parts' raw checksums, then ``-N``."""
    hasher = new_hasher(algorithm)
    for digest in part_digests:
        hasher.update(digest)
    return f"{encode(hasher.digest())}-{len(part_digests)}"


def combine_crcs(algorithm: str, parts: list[tuple[bytes, int]]) -> str:
    """A FULL_OBJECT CRC of concatenated parts from each part's (digest, size), without rereading data."""
    impl = _TABLE_CRCS[algorithm]
    value = 0
    for digest, size in parts:
        value = impl.combine(value, int.from_bytes(digest, "big"), size)
    return encode(value.to_bytes(impl.width // 8, "big"))
