"""Listing of the local object store (ListObjects, ListObjectsV2): metadata queries by key range."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

from sqlalchemy import Text, select, type_coerce
from sqlalchemy.orm import Session

from sagestack.db.models.objects import S3Object
from sagestack.storage import names
from sagestack.storage.api import (
    ListResult,
    ObjectInfo,
)
from sagestack.storage.buckets import BucketOps
from sagestack.storage.listing import iter_entries
from sagestack.storage.object_rows import (
    LISTED_META,
    MAX_LIST_KEYS,
    quote,
    raw_json,
)


class ListingOps(BucketOps):
    """ListObjects / ListObjectsV2 of the local store: key-range queries over object rows."""

    # ======================================================================================
    # listing
    # ======================================================================================
    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        marker: str | None = None,
        max_keys: int = MAX_LIST_KEYS,
    ) -> ListResult:
        """ListObjects (V1 marker / V2 start-after or continuation) in UTF-8 byte order.

        ``marker`` is exclusive. For V2 pass ``max(start_after, decoded continuation token)``;
        ``next_marker`` makes a fine continuation token (opaque to clients once encoded).
        """
        max_keys = max(0, min(max_keys, MAX_LIST_KEYS))
        raw_prefix = prefix.encode("utf-8", "surrogatepass")
        raw_delim = delimiter.encode("utf-8", "surrogatepass") if delimiter else None
        raw_marker = marker.encode("utf-8", "surrogatepass") if marker else None
        contents: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: bytes | None = None
        with self.db.session() as s:
            b = self._bucket_row(s, bucket)
            if max_keys == 0:
                return ListResult([], [], False, None)
            entries = iter_entries(self._fetcher(s, b.id), raw_prefix, raw_delim, raw_marker, max_keys + 1)
            taken = list(islice(entries, max_keys + 1))
            for key, row in taken[:max_keys]:
                if row is None:
                    prefixes.append(names.decode_key(key))
                else:
                    contents.append(self._listed_info(bucket, row))
                last = key
        truncated = len(taken) > max_keys
        next_marker = names.decode_key(last) if truncated and last is not None else None
        return ListResult(contents, prefixes, truncated, next_marker)

    def _listed_info(self, bucket: str, row: Any) -> ObjectInfo:
        """The ObjectInfo of a listing row (see :meth:`_fetcher`); ``meta`` is not loaded."""
        part_sizes = raw_json(row.part_sizes)
        return ObjectInfo(
            bucket=bucket,
            key=names.decode_key(row.key),
            size=row.size,
            etag=quote(row.etag),
            last_modified=row.last_modified,
            meta=LISTED_META,
            checksums=raw_json(row.checksums) or {},
            checksum_type=row.checksum_type,
            parts_count=len(part_sizes) if part_sizes is not None else None,
            blob_path=self.blobs.path(row.blob) if row.blob is not None else None,
        )

    @staticmethod
    def _fetcher(s: Session, bucket_id: int) -> Any:
        # Core rows, not ORM objects: a listing page builds up to 1000 of them and the
        # identity map would only add overhead. Only the columns a listing returns are read,
        # and the JSON ones as raw text: rows rolled up into a common prefix are never decoded,
        # and the usual ``{}`` / ``null`` values are recognised without a JSON parse.
        table = S3Object.__table__
        c = table.c
        columns = [
            c.key, c.size, c.etag, c.last_modified, c.checksum_type, c.blob,
            type_coerce(c.checksums, Text).label("checksums"),
            type_coerce(c.part_sizes, Text).label("part_sizes"),
        ]  # fmt: skip

        def fetch(lower: bytes, inclusive: bool, upper: bytes | None, limit: int) -> Sequence[Any]:
            query = select(*columns).where(table.c.bucket_id == bucket_id)
            query = query.where(table.c.key >= lower if inclusive else table.c.key > lower)
            if upper is not None:
                query = query.where(table.c.key < upper)
            return s.execute(query.order_by(table.c.key).limit(limit)).all()

        return fetch

