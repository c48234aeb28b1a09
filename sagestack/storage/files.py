"""Moving whole files between the object store and local directories (jobs, artifacts, reports).

Used by the platform itself — training channels, model artifacts, transform
output, debugger reports — never by the S3 HTTP handlers. With the embedded
store, downloads are hard links to the immutable blob files: instant and free.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sagestack.aws.errors import AwsError
from sagestack.storage.api import ObjectInfo, ObjectMeta, ObjectStore

WRITE_CHUNK = 1024 * 1024


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> ("bucket", "key/prefix")."""
    if not uri.startswith("s3://"):
        raise AwsError("ValidationException", f"{uri} is not an S3 URI (s3://bucket/key).", 400)
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise AwsError("ValidationException", f"{uri} names no bucket.", 400)
    return bucket, key


def iter_objects(store: ObjectStore, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, in key order, page by page."""
    marker: str | None = None
    while True:
        result = store.list_objects(bucket, prefix=prefix, marker=marker, max_keys=1000)
        yield from result.contents
        if not result.is_truncated or not result.contents:
            return
        marker = result.next_marker or result.contents[-1].key


def fetch(store: ObjectStore, info: ObjectInfo, dest: Path) -> None:
    """Place one object at ``dest``: a hard link to the blob where possible, else a streamed copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if info.blob_path is not None:
        try:
            os.link(info.blob_path, dest)
            return
        except OSError:
            pass  # another filesystem: fall back to copying
    body = store.open_object(info.bucket, info.key)
    try:
        with open(dest, "wb") as handle:
            for chunk in body.chunks:
                handle.write(chunk)
    finally:
        close = getattr(body.chunks, "close", None)
        if close is not None:
            close()


def upload(store: ObjectStore, path: Path, bucket: str, key: str,
           content_type: str = "application/octet-stream") -> ObjectInfo:
    """Store a local file as ``bucket/key`` (durably, atomically)."""
    writer = store.begin_write()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(WRITE_CHUNK):
                writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return store.put_object(bucket, key, writer, ObjectMeta(content_type=content_type))


def upload_tree(store: ObjectStore, root: Path, bucket: str, prefix: str, skip_hidden: bool = False) -> int:
    """Upload every file below ``root`` under ``prefix`` (keys use '/'); return the count.

    ``skip_hidden`` leaves out dot-files (temporary files still being written).
    """
    count = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if skip_hidden and any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        relative = path.relative_to(root).as_posix()
        upload(store, path, bucket, f"{prefix.rstrip('/')}/{relative}" if prefix else relative,
               _content_type(path))
        count += 1
    return count


def _content_type(path: Path) -> str:
    return {".html": "text/html", ".json": "application/json", ".csv": "text/csv",
            ".png": "image/png"}.get(path.suffix, "application/octet-stream")


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, dirs_exist_ok=True)
