"""Helpers shared by the S3 integration tests."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def unique_bucket(prefix: str = "t") -> str:
    """Tests share one server per worker: every test works in buckets of its own."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    err = excinfo.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"].get("Message", "")


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def file_md5(path: Any) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_random_file(path: Any, size: int, seed: int = 0) -> None:
    """A file of ``size`` pseudo-random bytes, written in 1 MiB blocks (cheap to make, incompressible)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB
    with open(path, "wb") as handle:
        written, counter = 0, 0
        while written < size:
            piece = counter.to_bytes(8, "big") + block[8:]
            piece = piece[: size - written]
            handle.write(piece)
            written += len(piece)
            counter += 1
