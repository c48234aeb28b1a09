"""Object rows and the values the API returns: header columns, metadata, JSON columns, timestamps, limits.

Shared by the rooms of the local object store (:mod:`.buckets`, :mod:`.objects`,
:mod:`.object_listing`, :mod:`.uploads`; :mod:`.engine` assembles them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sagestack.db.base import utcnow
from sagestack.storage.api import (
    BodyWriter,
    ObjectMeta,
)
from sagestack.storage.blobs import BlobWriter

MAX_LIST_KEYS = 1000
MAX_PART_NUMBER = 10000
MAX_DELETE_KEYS = 1000
#: How often a reader retries when the blob it looked up was replaced before it could open it.
OPEN_RETRIES = 5
_HEADER_FIELDS = (
    "content_type",
    "content_encoding",
    "content_disposition",
    "content_language",
    "cache_control",
    "expires",
)


def now_seconds() -> Any:
    # S3 reports Last-Modified to the second; storing it truncated keeps
    # If-Modified-Since comparisons consistent with what clients were shown.
    return utcnow().replace(microsecond=0)


def quote(etag: str) -> str:
    return f'"{etag}"'


def header_columns(meta: ObjectMeta) -> dict[str, Any]:
    cols: dict[str, Any] = {f: getattr(meta, f) for f in _HEADER_FIELDS}
    cols["user_meta"] = dict(meta.user)
    return cols


def meta_from_row(row: Any) -> ObjectMeta:
    fields = {f: getattr(row, f) for f in _HEADER_FIELDS}
    if fields["content_type"] is None:
        del fields["content_type"]
    return ObjectMeta(**fields, user=dict(row.user_meta or {}))


#: ``meta`` of listed objects: a listing never returns headers or user metadata, so they are not
#: read (decoding them per row was most of a page's cost); use head_object for an object's metadata.
LISTED_META = ObjectMeta()
_TRIVIAL_JSON: dict[str, Any] = {"{}": {}, "null": None, "[]": []}


def raw_json(value: Any) -> Any:
    """A JSON column read as text (SQLite, MySQL), or already decoded by the driver (PostgreSQL)."""
    if not isinstance(value, str):
        return value
    if value in _TRIVIAL_JSON:
        trivial = _TRIVIAL_JSON[value]
        return {} if trivial == {} else trivial  # a fresh dict: callers may keep it
    return json.loads(value)


def close_reader(reader: Iterator[bytes]) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()


def own_writer(writer: BodyWriter) -> BlobWriter:
    """Bodies are committed by the store that received them (the blob must already be on our disk)."""
    if not isinstance(writer, BlobWriter):
        raise TypeError("a LocalObjectStore only commits writers from its own begin_write()")
    return writer

