"""Bucket policies kept on local disk, one file per bucket, for the external-S3 store.

The external store forwards buckets and objects to another S3, but a bucket's
policy governs access to *this* server's API (its principals are this
installation's), so like the other bucket sub-resources (tags) it stays here:
``<dir>/<bucket>.json``, the document exactly as received. Bucket names are
safe file names (lowercase letters, digits, dots and hyphens, checked when the
bucket is created). A write goes to a temp file in the same directory, is
fsync'ed and renamed over the old file, then the directory is fsync'ed: a
reader sees the old document or the new one, never a mix, and a write that
returned survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from sagestack.storage.blobs import _fsync_dir

_SUFFIX = ".json"
_TEMP_SUFFIX = ".tmp"


class PolicyFiles:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise ValueError(f"not a bucket name: {bucket!r}")
        return self.dir / f"{bucket}{_SUFFIX}"

    def read(self, bucket: str) -> str | None:
        try:
            return self._path(bucket).read_text(encoding="utf-8")
        except (FileNotFoundError, ValueError):
            return None

    def write(self, bucket: str, document: str) -> None:
        target = self._path(bucket)
        tmp = self.dir / f".{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        try:
            with open(tmp, "xb") as f:
                f.write(document.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(self.dir)

    def delete(self, bucket: str) -> None:
        try:
            self._path(bucket).unlink()
        except (FileNotFoundError, ValueError):
            return
        _fsync_dir(self.dir)

    def remove_temp_files(self, grace_seconds: float = 0.0) -> int:
        """Temp files an interrupted write left behind (start-up: grace 0)."""
        removed = 0
        cutoff = time.time() - grace_seconds
        for path in self.dir.glob(f".*{_TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
        return removed
