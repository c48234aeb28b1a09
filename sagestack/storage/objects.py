"""Objects of the local object store: writing, reading, deleting and copying.

Write path (PutObject, Copy): the body streams into a temp file while MD5 and
any requested checksums are computed; the file is fsync'ed and renamed into the
blob tree; only then does a short transaction insert or swap the metadata row.
Bytes are never copied while the DB write lock is held, and the blob a row
replaced is unlinked only after the commit.

Read path: the row is read, the blob opened (an open file survives a concurrent
unlink), and the bytes streamed in 1 MiB chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db.models.objects import S3Object, S3ObjectPart
from sagestack.storage import checksums as cks
from sagestack.storage import errors, names, ranges
from sagestack.storage.api import (
    BodyWriter,
    ChecksumExpectations,
    DeleteResult,
    ObjectBody,
    ObjectInfo,
    ObjectMeta,
)
from sagestack.storage.blobs import BlobWriter, FinishedBody, Piece, verify_body
from sagestack.storage.buckets import BucketOps
from sagestack.storage.object_rows import (
    MAX_DELETE_KEYS,
    OPEN_RETRIES,
    close_reader,
    header_columns,
    meta_from_row,
    now_seconds,
    own_writer,
    quote,
)


class ObjectOps(BucketOps):
    """The object operations of the local store (writes, reads, deletes, copies)."""

    # ======================================================================================
    # writing objects
    # ======================================================================================
    def begin_write(
        self, algorithms: Iterable[str] = (), max_size: int = errors.MAX_OBJECT_PUT_SIZE
    ) -> BlobWriter:
        """A writer for one request body. Pass the checksum algorithms the request names
        (``x-amz-checksum-*`` / ``x-amz-sdk-checksum-algorithm`` / ``x-amz-trailer``) so
        they are computed while streaming; anything missed is recomputed from disk at commit.
        """
        return self.blobs.writer(algorithms, max_size)

    def put_object(
        self,
        bucket: str,
        key: str,
        writer: BodyWriter,
        meta: ObjectMeta,
        expected: ChecksumExpectations | None = None,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> ObjectInfo:
        """Commit a received body as ``bucket/key``; replaces any existing object atomically."""
        writer = own_writer(writer)
        try:
            raw_key = names.encode_key(key)
            names.check_user_metadata(meta.user)
            body = writer.finish()
            digests = verify_body(body, expected)
            blob, body = self.blobs.publish_writer(writer)
        finally:
            writer.abort()  # no-op once published
        checksums = {a: cks.encode(d) for a, d in digests.items()}
        fields = {**self._plain_fields(body.size, body.md5.hex(), checksums), **header_columns(meta)}
        return self._commit_object(bucket, raw_key, blob, fields, if_match, if_none_match)

    def _commit_object(
        self,
        bucket: str,
        raw_key: bytes,
        blob: str | None,
        fields: dict[str, Any],
        if_match: str | None = None,
        if_none_match: str | None = None,
        extra: Callable[[Session], list[str]] | None = None,
        parts: Sequence[Piece] = (),
    ) -> ObjectInfo:
        """Point ``bucket/key`` at a published blob (or, ``blob=None``, at ``parts``) in one short transaction.

        ``extra(session)`` runs inside the same transaction (multipart completion
        uses it to drop the upload) and returns blob names to unlink after commit.
        A failed commit unlinks ``blob`` but never ``parts``: those still belong to their upload.
        """
        old: list[str] = []
        try:
            for attempt in range(3):
                old = []
                try:
                    with self.db.transaction() as s:
                        info = self._upsert_object(
                            s, bucket, raw_key, blob, fields, if_match, if_none_match, old, parts
                        )
                        if extra is not None:
                            old.extend(extra(s))
                    break
                except IntegrityError:
                    # Another writer inserted the same new key first (PostgreSQL): retry as a replace.
                    if attempt == 2:
                        raise
        except BaseException:
            if blob is not None:
                self.blobs.delete([blob])
            raise
        self.blobs.delete(old)
        return info

    def _upsert_object(
        self,
        s: Session,
        bucket: str,
        raw_key: bytes,
        blob: str | None,
        fields: dict[str, Any],
        if_match: str | None,
        if_none_match: str | None,
        old: list[str],
        parts: Sequence[Piece],
    ) -> ObjectInfo:
        b = self._bucket_row(s, bucket)
        row = s.scalars(
            select(S3Object).where(S3Object.bucket_id == b.id, S3Object.key == raw_key).with_for_update()
        ).first()
        self._check_write_conditions(row, raw_key, if_match, if_none_match)
        values = {**fields, "blob": blob, "last_modified": now_seconds()}
        if row is None:
            row = S3Object(bucket_id=b.id, key=raw_key, **values)
            s.add(row)
        else:
            old.extend(self._drop_parts(s, row.id) if row.blob is None else [row.blob])
            for name, value in values.items():
                setattr(row, name, value)
        s.flush()
        if parts:
            s.add_all(
                S3ObjectPart(object_id=row.id, part_index=i, start=p.start, size=p.size, blob=p.blob)
                for i, p in enumerate(parts)
            )
            s.flush()
        return self._object_info(bucket, row)

    @staticmethod
    def _drop_parts(s: Session, object_id: int) -> list[str]:
        """Delete the part rows of a multipart object; returns their blobs (to unlink after commit)."""
        query = delete(S3ObjectPart).where(S3ObjectPart.object_id == object_id).returning(S3ObjectPart.blob)
        return list(s.scalars(query))

    @staticmethod
    def _drop_objects(s: Session, *where: Any) -> list[str]:
        """Delete the object rows matching ``where`` and their part rows; returns every blob they held."""
        ids = select(S3Object.id).where(*where)
        # Parts first: with foreign keys enforced, deleting the objects would cascade them away unseen.
        parts = delete(S3ObjectPart).where(S3ObjectPart.object_id.in_(ids)).returning(S3ObjectPart.blob)
        blobs = list(s.scalars(parts))
        blobs.extend(b for b in s.scalars(delete(S3Object).where(*where).returning(S3Object.blob)) if b is not None)
        return blobs

    @staticmethod
    def _check_write_conditions(
        row: S3Object | None, raw_key: bytes, if_match: str | None, if_none_match: str | None
    ) -> None:
        """Conditional writes (If-None-Match: * / If-Match: etag), decided inside the commit."""
        if if_none_match is not None and row is not None:
            raise errors.precondition_failed("If-None-Match")
        if if_match is not None:
            if row is None:
                raise errors.no_such_key(names.decode_key(raw_key))
            if not ranges.etag_matches(if_match, row.etag):
                raise errors.precondition_failed("If-Match")

    # ======================================================================================
    # reading objects
    # ======================================================================================
    def _object_info(self, bucket: str, row: Any) -> ObjectInfo:
        """From an S3Object or a Core row of its columns."""
        return ObjectInfo(
            bucket=bucket,
            key=names.decode_key(row.key),
            size=row.size,
            etag=quote(row.etag),
            last_modified=row.last_modified,
            meta=meta_from_row(row),
            checksums=dict(row.checksums or {}),
            checksum_type=row.checksum_type,
            parts_count=len(row.part_sizes) if row.part_sizes is not None else None,
            blob_path=self.blobs.path(row.blob) if row.blob is not None else None,
        )

    def _lookup(self, bucket: str, key: str) -> tuple[ObjectInfo, S3Object]:
        raw_key = names.encode_key(key)
        with self.db.session() as s:
            b = self._bucket_row(s, bucket)
            row = s.scalars(
                select(S3Object).where(S3Object.bucket_id == b.id, S3Object.key == raw_key)
            ).first()
            if row is None:
                raise errors.no_such_key(key)
            return self._object_info(bucket, row), row

    def _open_current(
        self, bucket: str, key: str, span_of: Callable[[S3Object], tuple[int, int] | None]
    ) -> tuple[ObjectInfo, S3Object, tuple[int, int] | None, Iterator[bytes]]:
        """Look up the object and open the bytes of ``span_of(row)`` (inclusive; None: all of them).

        Retries if a concurrent replace unlinked a blob between the lookup and the open.
        """
        raw_key = names.encode_key(key)
        for _ in range(OPEN_RETRIES):
            with self.db.session() as s:
                b = self._bucket_row(s, bucket)
                row = s.scalars(
                    select(S3Object).where(S3Object.bucket_id == b.id, S3Object.key == raw_key)
                ).first()
                if row is None:
                    raise errors.no_such_key(key)
                span = span_of(row)
                first, last = (0, row.size - 1) if span is None else span
                # Read in the same session as the row, so the pieces belong to the version looked up.
                pieces = self._pieces(s, row, first, last)
                info = self._object_info(bucket, row)
            try:
                return info, row, span, self.blobs.open_pieces(pieces, first, last - first + 1)
            except FileNotFoundError:
                continue
        raise RuntimeError(f"blob of {bucket}/{key} keeps disappearing")

    @staticmethod
    def _pieces(s: Session, row: S3Object, first: int, last: int) -> list[Piece]:
        """The blobs holding bytes ``first..last`` of the object (only those: a ranged GET of
        a 10,000-part object should not load or open 10,000 parts)."""
        if row.blob is not None:
            return [Piece(row.blob, 0, row.size)]
        t = S3ObjectPart
        query = (
            select(t.blob, t.start, t.size)
            .where(t.object_id == row.id, t.start <= last, t.start + t.size > first)
            .order_by(t.part_index)
        )
        return [Piece(*r) for r in s.execute(query)]

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        return self._lookup(bucket, key)[0]

    def open_object(
        self,
        bucket: str,
        key: str,
        byte_range: ranges.RangeSpec | None = None,
        *,
        part_number: int | None = None,
    ) -> ObjectBody:
        """The object's bytes, all of them or one range / part, as an iterator of 1 MiB chunks.

        ``byte_range`` is what :func:`ranges.parse_range_header` returns; an
        unsatisfiable one raises InvalidRange (416). Close ``chunks`` if it is
        not consumed to the end (it also closes itself when garbage collected).
        """
        if byte_range is not None and part_number is not None:
            raise AwsError(
                "InvalidRequest", "Cannot specify both Range header and partNumber query parameter."
            )
        info, _, span, reader = self._open_current(
            bucket, key, lambda row: self._span(row, byte_range, part_number)
        )
        return ObjectBody(info, reader, span)

    @staticmethod
    def _span(
        row: S3Object, byte_range: ranges.RangeSpec | None, part_number: int | None
    ) -> tuple[int, int] | None:
        if byte_range is not None:
            return ranges.resolve_range(byte_range, row.size)
        if part_number is None:
            return None
        sizes = row.part_sizes if row.part_sizes is not None else [row.size]
        if not 1 <= part_number <= len(sizes):
            raise errors.invalid_part_number_get(part_number)
        first = sum(sizes[: part_number - 1])
        if sizes[part_number - 1] == 0:
            return None
        return first, first + sizes[part_number - 1] - 1

    # ======================================================================================
    # deleting
    # ======================================================================================
    def delete_object(self, bucket: str, key: str) -> None:
        """Deleting a missing key succeeds, as in S3 (only a missing bucket is an error)."""
        raw_key = names.encode_key(key)
        with self.db.transaction() as s:
            b = self._bucket_row(s, bucket)
            blobs = self._drop_objects(s, S3Object.bucket_id == b.id, S3Object.key == raw_key)
        self.blobs.delete(blobs)

    def delete_objects(self, bucket: str, keys: Sequence[str]) -> list[DeleteResult]:
        """DeleteObjects: one transaction for up to 1000 keys; per-key results in request order."""
        if not keys or len(keys) > MAX_DELETE_KEYS:
            raise errors.malformed_xml()
        results: list[DeleteResult] = []
        raw_keys: list[bytes] = []
        for key in keys:
            try:
                raw_keys.append(names.encode_key(key))
                results.append(DeleteResult(key))
            except AwsError as exc:
                results.append(DeleteResult(key, exc))
        with self.db.transaction() as s:
            b = self._bucket_row(s, bucket)
            blobs = self._drop_objects(s, S3Object.bucket_id == b.id, S3Object.key.in_(raw_keys))
        self.blobs.delete(blobs)
        return results

    # ======================================================================================
    # copying
    # ======================================================================================
    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        meta: ObjectMeta | None = None,
        *,
        checksum_algorithm: str | None = None,
    ) -> ObjectInfo:
        """CopyObject. ``meta=None`` is the COPY directive (keep the source's metadata),
        anything else REPLACE. A single-part source is hard-linked (no bytes move); a
        multipart one is re-read, because the copy gets a plain MD5 ETag as in S3.
        """
        raw_dst = names.encode_key(dst_key)
        if meta is not None:
            names.check_user_metadata(meta.user)
        algorithm = cks.normalize_algorithm(checksum_algorithm) if checksum_algorithm else None
        for _ in range(OPEN_RETRIES):
            info, row, _, reader = self._open_current(src_bucket, src_key, self._copy_source_check)
            if (src_bucket, src_key) == (dst_bucket, dst_key) and meta is None:
                close_reader(reader)
                raise errors.copy_to_itself()
            try:
                blob, fields = self._copy_blob(row, reader, algorithm)
            except FileNotFoundError:  # the source was replaced meanwhile: copy the new one
                continue
            fields.update(header_columns(meta if meta is not None else info.meta))
            return self._commit_object(dst_bucket, raw_dst, blob, fields)
        raise RuntimeError(f"blob of {src_bucket}/{src_key} keeps disappearing")

    @staticmethod
    def _copy_source_check(row: S3Object) -> None:
        if row.size > errors.MAX_OBJECT_PUT_SIZE:
            raise errors.copy_source_too_large()

    def _copy_blob(
        self, row: S3Object, reader: Iterator[bytes], algorithm: str | None
    ) -> tuple[str, dict[str, Any]]:
        """Copy the source ``row`` whose bytes ``reader`` has open (and closes)."""
        stored = dict(row.checksums or {}) if row.checksum_type == "FULL_OBJECT" else {}
        wanted = {algorithm} if algorithm else set(row.checksums or {})
        if row.blob is not None and row.part_sizes is None and wanted <= set(stored):
            close_reader(reader)
            checksums = {a: stored[a] for a in wanted}
            blob = self.blobs.link_copy(row.blob)
            return blob, self._plain_fields(row.size, row.etag, checksums)
        # A multipart source is re-read (its parts are never shared): the copy gets a plain MD5 ETag.
        blob, body = self._stream_to_blob(reader, wanted)
        checksums = {a: cks.encode(d) for a, d in body.digests.items()}
        return blob, self._plain_fields(body.size, body.md5.hex(), checksums)

    def _stream_to_blob(self, reader: Iterator[bytes], algorithms: Iterable[str]) -> tuple[str, FinishedBody]:
        """Copy a reader into a new published blob, hashing on the way (bounded memory)."""
        try:
            with self.begin_write(algorithms) as writer:
                for chunk in reader:
                    writer.write(chunk)
                return self.blobs.publish_writer(writer)
        finally:
            close_reader(reader)

    @staticmethod
    def _plain_fields(size: int, etag: str, checksums: dict[str, str]) -> dict[str, Any]:
        """The columns of a single-part object (PutObject, CopyObject): its checksums are of the whole object."""
        return {
            "size": size,
            "etag": etag,
            "checksums": checksums,
            "checksum_type": "FULL_OBJECT" if checksums else None,
            "part_sizes": None,
        }

