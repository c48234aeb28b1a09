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
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice, pairwise
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Text, delete, exists, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db.base import Database, utcnow
from sagestack.db.models.objects import S3Bucket, S3MultipartUpload, S3Object, S3ObjectPart, S3UploadPart
from sagestack.storage import checksums as cks
from sagestack.storage import errors, multipart, names, ranges
from sagestack.storage.api import (
    BodyWriter,
    BucketInfo,
    ChecksumExpectations,
    CompletedPart,
    DeleteResult,
    ListResult,
    ObjectBody,
    ObjectInfo,
    ObjectMeta,
    PartInfo,
    PartsPage,
    UploadInfo,
    UploadsPage,
)
from sagestack.storage.blobs import CHUNK_SIZE, BlobStore, BlobWriter, FinishedBody, Piece
from sagestack.storage.listing import common_prefix, iter_entries, prefix_end

MAX_LIST_KEYS = 1000
MAX_PART_NUMBER = 10000
MAX_DELETE_KEYS = 1000
#: How often a reader retries when the blob it looked up was replaced before it could open it.
_OPEN_RETRIES = 5
_HEADER_FIELDS = (
    "content_type",
    "content_encoding",
    "content_disposition",
    "content_language",
    "cache_control",
    "expires",
)


class RecoveryReport(NamedTuple):
    temp_files_removed: int
    orphan_blobs_removed: int


def _now_seconds() -> Any:
    # S3 reports Last-Modified to the second; storing it truncated keeps
    # If-Modified-Since comparisons consistent with what clients were shown.
    return utcnow().replace(microsecond=0)


def _quote(etag: str) -> str:
    return f'"{etag}"'


def _header_columns(meta: ObjectMeta) -> dict[str, Any]:
    cols: dict[str, Any] = {f: getattr(meta, f) for f in _HEADER_FIELDS}
    cols["user_meta"] = dict(meta.user)
    return cols


def _meta_from_row(row: Any) -> ObjectMeta:
    fields = {f: getattr(row, f) for f in _HEADER_FIELDS}
    if fields["content_type"] is None:
        del fields["content_type"]
    return ObjectMeta(**fields, user=dict(row.user_meta or {}))


#: ``meta`` of listed objects: a listing never returns headers or user metadata, so they are not
#: read (decoding them per row was most of a page's cost); use head_object for an object's metadata.
_LISTED_META = ObjectMeta()
_TRIVIAL_JSON: dict[str, Any] = {"{}": {}, "null": None, "[]": []}


def _raw_json(value: Any) -> Any:
    """A JSON column read as text (SQLite, MySQL), or already decoded by the driver (PostgreSQL)."""
    if not isinstance(value, str):
        return value
    if value in _TRIVIAL_JSON:
        trivial = _TRIVIAL_JSON[value]
        return {} if trivial == {} else trivial  # a fresh dict: callers may keep it
    return json.loads(value)


def _close(reader: Iterator[bytes]) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()


def _own_writer(writer: BodyWriter) -> BlobWriter:
    """Bodies are committed by the store that received them (the blob must already be on our disk)."""
    if not isinstance(writer, BlobWriter):
        raise TypeError("a LocalObjectStore only commits writers from its own begin_write()")
    return writer


class LocalObjectStore:
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

    # ======================================================================================
    # buckets
    # ======================================================================================
    @staticmethod
    def _bucket_info(row: S3Bucket) -> BucketInfo:
        return BucketInfo(row.name, row.region, row.owner, row.created)

    @staticmethod
    def _bucket_row(s: Session, name: str) -> S3Bucket:
        row = s.scalars(select(S3Bucket).where(S3Bucket.name == name)).first()
        if row is None:
            raise errors.no_such_bucket(name)
        return row

    def create_bucket(self, name: str, region: str, owner: str) -> BucketInfo:
        names.check_bucket_name(name)
        try:
            with self.db.transaction() as s:
                self._raise_if_bucket_exists(s, name, owner)
                row = S3Bucket(name=name, region=region, owner=owner, created=_now_seconds())
                s.add(row)
                s.flush()
                return self._bucket_info(row)
        except IntegrityError:  # created concurrently by another request
            with self.db.session() as s:
                self._raise_if_bucket_exists(s, name, owner)
            raise

    @staticmethod
    def _raise_if_bucket_exists(s: Session, name: str, owner: str) -> None:
        existing = s.scalars(select(S3Bucket).where(S3Bucket.name == name)).first()
        if existing is None:
            return
        if existing.owner == owner:
            raise errors.bucket_already_owned_by_you(name)
        raise errors.bucket_already_exists(name)

    def get_bucket(self, name: str) -> BucketInfo:
        with self.db.session() as s:
            return self._bucket_info(self._bucket_row(s, name))

    head_bucket = get_bucket

    def list_buckets(self, owner: str | None = None) -> list[BucketInfo]:
        query = select(S3Bucket).order_by(S3Bucket.name)
        if owner is not None:
            query = query.where(S3Bucket.owner == owner)
        with self.db.session() as s:
            return [self._bucket_info(r) for r in s.scalars(query)]

    def delete_bucket(self, name: str) -> None:
        """Only an empty bucket can go; its unfinished multipart uploads go with it (as in S3)."""
        with self.db.transaction() as s:
            bucket = self._bucket_row(s, name)
            if s.scalar(select(exists().where(S3Object.bucket_id == bucket.id))):
                raise errors.bucket_not_empty(name)
            uploads = select(S3MultipartUpload.id).where(S3MultipartUpload.bucket_id == bucket.id)
            part_blobs = list(s.scalars(select(S3UploadPart.blob).where(S3UploadPart.upload_pk.in_(uploads))))
            s.execute(delete(S3UploadPart).where(S3UploadPart.upload_pk.in_(uploads)))
            s.execute(delete(S3MultipartUpload).where(S3MultipartUpload.bucket_id == bucket.id))
            s.delete(bucket)
        self.blobs.delete(part_blobs)

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
        writer = _own_writer(writer)
        try:
            raw_key = names.encode_key(key)
            names.check_user_metadata(meta.user)
            body = writer.finish()
            digests = self._verify_body(body, expected)
            blob, body = self.blobs.publish_writer(writer)
        finally:
            writer.abort()  # no-op once published
        fields = {
            "size": body.size,
            "etag": body.md5.hex(),
            "checksums": {a: cks.encode(d) for a, d in digests.items()},
            "checksum_type": "FULL_OBJECT" if digests else None,
            "part_sizes": None,
            **_header_columns(meta),
        }
        return self._commit_object(bucket, raw_key, blob, fields, if_match, if_none_match)

    def _verify_body(self, body: FinishedBody, expected: ChecksumExpectations | None) -> dict[str, bytes]:
        """Check the body against what the request claimed; returns every checksum digest to store."""
        digests = dict(body.digests)
        if expected is None:
            return digests
        expected.validate()
        if expected.size is not None and expected.size != body.size:
            raise errors.incomplete_body(expected.size, body.size)
        if expected.content_md5 is not None:
            want = cks.decode_content_md5(expected.content_md5)
            if want != body.md5:
                raise errors.bad_content_md5(expected.content_md5, body.md5, want)
        for name, value in expected.checksums.items():
            algorithm = cks.normalize_algorithm(name)
            if algorithm not in digests:
                digests.update(self._hash_file(body.tmp_path, [algorithm]))
            if cks.decode_checksum(algorithm, value) != digests[algorithm]:
                raise errors.bad_checksum(algorithm)
        return digests

    @staticmethod
    def _hash_file(path: Path, algorithms: Iterable[str]) -> dict[str, bytes]:
        """Checksums of a file on disk, read in chunks (for an algorithm the writer was not told)."""
        hashers = {a: cks.new_hasher(a) for a in algorithms}
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                for h in hashers.values():
                    h.update(chunk)
        return {a: h.digest() for a, h in hashers.items()}

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
        values = {**fields, "blob": blob, "last_modified": _now_seconds()}
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
            etag=_quote(row.etag),
            last_modified=row.last_modified,
            meta=_meta_from_row(row),
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
        for _ in range(_OPEN_RETRIES):
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
        for _ in range(_OPEN_RETRIES):
            info, row, _, reader = self._open_current(src_bucket, src_key, self._copy_source_check)
            if (src_bucket, src_key) == (dst_bucket, dst_key) and meta is None:
                _close(reader)
                raise errors.copy_to_itself()
            try:
                blob, fields = self._copy_blob(row, reader, algorithm)
            except FileNotFoundError:  # the source was replaced meanwhile: copy the new one
                continue
            fields.update(_header_columns(meta if meta is not None else info.meta))
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
            _close(reader)
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
            _close(reader)

    @staticmethod
    def _plain_fields(size: int, etag: str, checksums: dict[str, str]) -> dict[str, Any]:
        return {
            "size": size,
            "etag": etag,
            "checksums": checksums,
            "checksum_type": "FULL_OBJECT" if checksums else None,
            "part_sizes": None,
        }

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
        part_sizes = _raw_json(row.part_sizes)
        return ObjectInfo(
            bucket=bucket,
            key=names.decode_key(row.key),
            size=row.size,
            etag=_quote(row.etag),
            last_modified=row.last_modified,
            meta=_LISTED_META,
            checksums=_raw_json(row.checksums) or {},
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

    # ======================================================================================
    # multipart uploads
    # ======================================================================================
    @staticmethod
    def _check_part_number(part_number: int) -> None:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise errors.invalid_part_number_argument(part_number)

    @staticmethod
    def _upload_info(bucket: str, row: S3MultipartUpload) -> UploadInfo:
        return UploadInfo(
            bucket=bucket,
            key=names.decode_key(row.key),
            upload_id=row.upload_id,
            initiated=row.initiated,
            owner=row.owner,
            meta=_meta_from_row(row),
            checksum_algorithm=row.checksum_algorithm,
            checksum_type=row.checksum_type,
        )

    def _upload_row(self, s: Session, bucket: str, key: str, upload_id: str) -> S3MultipartUpload:
        b = self._bucket_row(s, bucket)
        row = s.scalars(select(S3MultipartUpload).where(S3MultipartUpload.upload_id == upload_id)).first()
        if row is None or row.bucket_id != b.id or row.key != names.encode_key(key):
            raise errors.no_such_upload(upload_id)
        return row

    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta,
        owner: str = "",
        *,
        checksum_algorithm: str | None = None,
        checksum_type: str | None = None,
    ) -> UploadInfo:
        raw_key = names.encode_key(key)
        names.check_user_metadata(meta.user)
        algorithm, ctype = multipart.upload_checksum_mode(checksum_algorithm, checksum_type)
        with self.db.transaction() as s:
            b = self._bucket_row(s, bucket)
            row = S3MultipartUpload(
                upload_id=secrets.token_urlsafe(48),
                bucket_id=b.id,
                key=raw_key,
                initiated=utcnow(),
                owner=owner or b.owner,
                checksum_algorithm=algorithm,
                checksum_type=ctype,
                **_header_columns(meta),
            )
            s.add(row)
            s.flush()
            return self._upload_info(bucket, row)

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        """The upload (NoSuchUpload otherwise): check it before reading an UploadPart body."""
        with self.db.session() as s:
            return self._upload_info(bucket, self._upload_row(s, bucket, key, upload_id))

    def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        writer: BodyWriter,
        expected: ChecksumExpectations | None = None,
    ) -> PartInfo:
        writer = _own_writer(writer)
        try:
            self._check_part_number(part_number)
            upload = self.get_upload(bucket, key, upload_id)
            if expected is not None and upload.checksum_algorithm:
                multipart.check_same_algorithm(upload.checksum_algorithm, expected.algorithms())
            body = writer.finish()
            digests = self._verify_body(body, expected)
            if upload.checksum_algorithm and upload.checksum_algorithm not in digests:
                digests.update(self._hash_file(body.tmp_path, [upload.checksum_algorithm]))
            blob, body = self.blobs.publish_writer(writer)
        finally:
            writer.abort()
        return self._commit_part(
            bucket, key, upload_id, part_number, blob, body.size, body.md5.hex(), digests
        )

    def upload_part_copy(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        src_bucket: str,
        src_key: str,
        copy_range: str | None = None,
    ) -> PartInfo:
        """UploadPartCopy; ``copy_range`` is the raw ``x-amz-copy-source-range`` header."""
        self._check_part_number(part_number)
        upload = self.get_upload(bucket, key, upload_id)

        def copy_span(row: S3Object) -> tuple[int, int] | None:
            first, last = (0, row.size - 1)
            if copy_range is not None:
                first, last = ranges.parse_copy_source_range(copy_range, row.size)
            if last - first + 1 > errors.MAX_OBJECT_PUT_SIZE:
                raise errors.copy_source_too_large()
            return (first, last) if last >= first else None

        _, _, _, reader = self._open_current(src_bucket, src_key, copy_span)
        algorithms = [upload.checksum_algorithm] if upload.checksum_algorithm else []
        blob, body = self._stream_to_blob(reader, algorithms)
        return self._commit_part(
            bucket, key, upload_id, part_number, blob, body.size, body.md5.hex(), dict(body.digests)
        )

    def _commit_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        blob: str,
        size: int,
        etag: str,
        digests: dict[str, bytes],
    ) -> PartInfo:
        old: str | None = None
        now = _now_seconds()
        checksums = {a: cks.encode(d) for a, d in digests.items()}
        try:
            with self.db.transaction() as s:
                upload = self._upload_row(s, bucket, key, upload_id)
                part = s.get(S3UploadPart, (upload.id, part_number), with_for_update=True)
                if part is None:
                    s.add(
                        S3UploadPart(
                            upload_pk=upload.id,
                            part_number=part_number,
                            size=size,
                            etag=etag,
                            last_modified=now,
                            blob=blob,
                            checksums=checksums,
                        )
                    )
                else:  # re-uploading a part number replaces it
                    old = part.blob
                    part.size, part.etag, part.last_modified = size, etag, now
                    part.blob, part.checksums = blob, checksums
        except BaseException:
            self.blobs.delete([blob])
            raise
        if old is not None:
            self.blobs.delete([old])
        return PartInfo(part_number, size, _quote(etag), now, checksums)

    def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        expected: ChecksumExpectations | None = None,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> ObjectInfo:
        """Assemble the listed parts into one object; ETag ``"<md5 of the part md5s>-<N>"``."""
        if not parts:
            raise errors.malformed_xml()
        numbers = [p.part_number for p in parts]
        if any(b <= a for a, b in pairwise(numbers)):
            raise errors.invalid_part_order()
        with self.db.session() as s:
            upload_row = self._upload_row(s, bucket, key, upload_id)
            upload, upload_pk = self._upload_info(bucket, upload_row), upload_row.id
            stored = {
                p.part_number: p
                for p in s.scalars(select(S3UploadPart).where(S3UploadPart.upload_pk == upload_pk))
            }
        chosen = multipart.validate_completed_parts(upload, parts, stored)
        fields = multipart.multipart_fields(upload, chosen)
        multipart.verify_multipart_expectations(upload, fields, expected)
        fields.update(_header_columns(upload.meta))
        used = {p.part_number: p.blob for p in chosen}
        # The object *is* its part blobs, in order: completion moves no bytes. The parts are
        # already durable (fsync'ed and renamed before their rows were committed).
        pieces: list[Piece] = []
        offset = 0
        for p in chosen:
            pieces.append(Piece(p.blob, offset, p.size))
            offset += p.size

        def finish_upload(s: Session) -> list[str]:
            row = self._upload_row(s, bucket, key, upload_id)
            current = list(s.scalars(select(S3UploadPart).where(S3UploadPart.upload_pk == row.id)))
            if any(used.get(p.part_number, p.blob) != p.blob for p in current):
                # A listed part was re-uploaded while we assembled: what we built is stale.
                changed = next(p for p in current if used.get(p.part_number, p.blob) != p.blob)
                raise errors.invalid_part(upload_id, changed.part_number, _quote(changed.etag))
            s.execute(delete(S3UploadPart).where(S3UploadPart.upload_pk == row.id))
            s.delete(row)
            # Parts uploaded but not listed in the request go; the listed ones now belong to the object.
            return [p.blob for p in current if p.part_number not in used]

        return self._commit_object(
            bucket, names.encode_key(key), None, fields, if_match, if_none_match, extra=finish_upload, parts=pieces
        )

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        with self.db.transaction() as s:
            row = self._upload_row(s, bucket, key, upload_id)
            blobs = list(s.scalars(select(S3UploadPart.blob).where(S3UploadPart.upload_pk == row.id)))
            s.execute(delete(S3UploadPart).where(S3UploadPart.upload_pk == row.id))
            s.delete(row)
        self.blobs.delete(blobs)

    def list_parts(
        self, bucket: str, key: str, upload_id: str, part_number_marker: int = 0, max_parts: int = 1000
    ) -> PartsPage:
        max_parts = max(0, min(max_parts, 1000))
        with self.db.session() as s:
            row = self._upload_row(s, bucket, key, upload_id)
            rows = s.scalars(
                select(S3UploadPart)
                .where(S3UploadPart.upload_pk == row.id, S3UploadPart.part_number > part_number_marker)
                .order_by(S3UploadPart.part_number)
                .limit(max_parts + 1)
            ).all()
            upload = self._upload_info(bucket, row)
        parts = [
            PartInfo(p.part_number, p.size, _quote(p.etag), p.last_modified, dict(p.checksums or {}))
            for p in rows[:max_parts]
        ]
        next_marker = parts[-1].part_number if parts else None
        return PartsPage(upload, parts, len(rows) > max_parts, next_marker)

    def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        key_marker: str | None = None,
        upload_id_marker: str | None = None,
        max_uploads: int = 1000,
    ) -> UploadsPage:
        """Uploads ordered by key, then by initiation; common prefixes as in ListObjects."""
        max_uploads = max(0, min(max_uploads, 1000))
        raw_prefix = prefix.encode("utf-8", "surrogatepass")
        raw_delim = delimiter.encode("utf-8", "surrogatepass") if delimiter else None
        with self.db.session() as s:
            b = self._bucket_row(s, bucket)
            rows = self._upload_rows_after(s, b.id, raw_prefix, key_marker, upload_id_marker)
            entries = self._group_uploads(rows, raw_prefix, raw_delim, key_marker)
            taken = list(islice(entries, max_uploads + 1))
            uploads: list[UploadInfo] = []
            prefixes: list[str] = []
            for cp, row in taken[:max_uploads]:
                if row is None:
                    prefixes.append(names.decode_key(cp))
                else:
                    uploads.append(self._upload_info(bucket, row))
        truncated = len(taken) > max_uploads
        next_key = next_id = None
        if truncated and taken[:max_uploads]:
            cp, row = taken[max_uploads - 1]
            next_key = names.decode_key(cp)
            next_id = row.upload_id if row is not None else None
        return UploadsPage(uploads, prefixes, truncated, next_key, next_id)

    @staticmethod
    def _upload_rows_after(
        s: Session, bucket_id: int, raw_prefix: bytes, key_marker: str | None, upload_id_marker: str | None
    ) -> Iterator[S3MultipartUpload]:
        query = select(S3MultipartUpload).where(S3MultipartUpload.bucket_id == bucket_id)
        if raw_prefix:
            query = query.where(S3MultipartUpload.key >= raw_prefix)
            upper = prefix_end(raw_prefix)
            if upper is not None:
                query = query.where(S3MultipartUpload.key < upper)
        after_id = 0
        if key_marker is not None:
            raw_marker = names.encode_key(key_marker)
            marker_row = None
            if upload_id_marker:
                marker_row = s.scalars(
                    select(S3MultipartUpload).where(S3MultipartUpload.upload_id == upload_id_marker)
                ).first()
            if marker_row is not None and marker_row.key == raw_marker:
                # Later uploads of the marker key, then every later key.
                query = query.where(S3MultipartUpload.key >= raw_marker)
                after_id = marker_row.id
            else:
                query = query.where(S3MultipartUpload.key > raw_marker)
        query = query.order_by(S3MultipartUpload.key, S3MultipartUpload.id)
        marker_key = names.encode_key(key_marker) if key_marker is not None else None
        for row in s.scalars(query.execution_options(yield_per=200)):
            if after_id and row.key == marker_key and row.id <= after_id:
                continue
            yield row

    @staticmethod
    def _group_uploads(
        rows: Iterator[S3MultipartUpload], raw_prefix: bytes, raw_delim: bytes | None, key_marker: str | None
    ) -> Iterator[tuple[bytes, S3MultipartUpload | None]]:
        marker = names.encode_key(key_marker) if key_marker is not None else None
        current: bytes | None = None
        for row in rows:
            cp = common_prefix(row.key, raw_prefix, raw_delim)
            if cp is None:
                yield row.key, row
            elif cp != current:
                current = cp
                if marker is None or cp > marker:
                    yield cp, None
