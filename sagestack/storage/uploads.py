"""Multipart uploads of the local object store: create, upload (or copy) parts, complete, abort, list.

CompleteMultipartUpload moves no bytes: the object keeps its part blobs
(``S3ObjectPart`` rows) and is read by streaming them in order.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from itertools import islice, pairwise

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sagestack.db.base import utcnow
from sagestack.db.models.objects import S3MultipartUpload, S3Object, S3UploadPart
from sagestack.storage import checksums as cks
from sagestack.storage import errors, multipart, names, ranges
from sagestack.storage.api import (
    BodyWriter,
    ChecksumExpectations,
    CompletedPart,
    ObjectInfo,
    ObjectMeta,
    PartInfo,
    PartsPage,
    UploadInfo,
    UploadsPage,
)
from sagestack.storage.blobs import Piece, hash_file, verify_body
from sagestack.storage.listing import common_prefix, prefix_end
from sagestack.storage.object_rows import (
    MAX_PART_NUMBER,
    header_columns,
    meta_from_row,
    now_seconds,
    own_writer,
    quote,
)
from sagestack.storage.objects import ObjectOps


class UploadOps(ObjectOps):
    """The multipart-upload operations of the local store."""

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
            meta=meta_from_row(row),
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
                **header_columns(meta),
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
        writer = own_writer(writer)
        try:
            self._check_part_number(part_number)
            upload = self.get_upload(bucket, key, upload_id)
            if expected is not None and upload.checksum_algorithm:
                multipart.check_same_algorithm(upload.checksum_algorithm, expected.algorithms())
            body = writer.finish()
            digests = verify_body(body, expected)
            if upload.checksum_algorithm and upload.checksum_algorithm not in digests:
                digests.update(hash_file(body.tmp_path, [upload.checksum_algorithm]))
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
        now = now_seconds()
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
        return PartInfo(part_number, size, quote(etag), now, checksums)

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
        fields.update(header_columns(upload.meta))
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
                raise errors.invalid_part(upload_id, changed.part_number, quote(changed.etag))
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
            PartInfo(p.part_number, p.size, quote(p.etag), p.last_modified, dict(p.checksums or {}))
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
