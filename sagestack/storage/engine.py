"""The embedded object store: blob files on local disk, metadata rows in the metadata DB.

Write path (PutObject, UploadPart, Copy): the body streams into a temp file
while MD5 and any requested checksums are computed; the file is fsync'ed and
renamed into the blob tree; only then does a short transaction insert or swap
the metadata row. CompleteMultipartUpload moves no bytes: the object keeps its
part blobs (``S3ObjectPart`` rows) and is read by streaming them in order.
Bytes are never copied while the DB write lock
is held, and the blob a row replaced is unlinked only after the commit.

Read path: the row is read, the blob opened (an open file survives a concurrent
unlink), and the bytes streamed in 1 MiB chunks.

The store is assembled from its rooms, each building on the one before:
:mod:`.buckets`, :mod:`.objects` (write, read, delete, copy), :mod:`.uploads`
(multipart) and :mod:`.object_listing` (key-range queries); the row <-> value
conversions they share are in :mod:`.object_rows`. This module adds start-up recovery.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from sqlalchemy import select

from sagestack.db.base import Database
from sagestack.db.models.objects import S3Object, S3ObjectPart, S3UploadPart
from sagestack.storage.blobs import BlobStore
from sagestack.storage.object_listing import ListingOps
from sagestack.storage.uploads import UploadOps


class RecoveryReport(NamedTuple):
    temp_files_removed: int
    orphan_blobs_removed: int


class LocalObjectStore(UploadOps, ListingOps):
    """:class:`~sagestack.storage.api.ObjectStore` on local disk plus the metadata DB."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.blobs = BlobStore(root)

    # ======================================================================================
    # start-up
    # ======================================================================================
    def recover(self, grace_seconds: float = 0.0) -> RecoveryReport:
        """Remove what interrupted writes left behind: temp files and blobs no row refers to.

        Meant for start-up (grace 0). While writes are running, pass a grace period
        longer than any write's rename-to-commit gap (a minute is plenty).
        """
        temps = self.blobs.remove_temp_files(grace_seconds)
        orphans = self.blobs.remove_orphans(self._referenced_blobs, grace_seconds)
        return RecoveryReport(temps, orphans)

    def _referenced_blobs(self, candidates: list[str]) -> set[str]:
        found: set[str] = set()
        with self.db.session() as s:
            for i in range(0, len(candidates), 500):
                batch = candidates[i : i + 500]
                found.update(s.scalars(select(S3Object.blob).where(S3Object.blob.in_(batch))))
                found.update(s.scalars(select(S3UploadPart.blob).where(S3UploadPart.blob.in_(batch))))
                found.update(s.scalars(select(S3ObjectPart.blob).where(S3ObjectPart.blob.in_(batch))))
        return found

