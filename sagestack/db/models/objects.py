"""The embedded S3 object store: buckets, objects, multipart uploads and their parts.

Object bytes live in blob files under ``<data>/objects/blobs``; these rows are
the only index of them. An object is visible exactly when its row exists, and a
row is committed only after its blob is durable on disk.

Keys are stored as the **UTF-8 bytes** of the key (``LargeBinary``), not as
text: S3 lists keys in UTF-8 binary order, and a BLOB (SQLite) / bytea
(PostgreSQL) column compares with memcmp on every backend, so the
``(bucket_id, key)`` unique index already is that order with no collation to
configure (PostgreSQL's default text collations are locale-aware and would not
be). UTF-8 byte order also equals Unicode code-point order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from sagestack.db.base import Base, UtcDateTime, utcnow

#: S3 keys are at most 1024 bytes of UTF-8; MySQL needs a bounded VARBINARY to index it.
KeyBytes = LargeBinary(1024).with_variant(mysql.VARBINARY(1024), "mysql")


class S3Bucket(Base):
    __tablename__ = "s3_buckets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    region: Mapped[str] = mapped_column(String(32))
    #: The owning account id.
    owner: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: The bucket policy document exactly as PutBucketPolicy received it; None without one.
    #: Deferred: only the policy calls load it (one lookup by the unique name), bucket reads do not.
    policy: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)


class _ObjectHeaders:
    """The stored HTTP headers of an object (or of the object a multipart upload will make)."""

    content_type: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    content_encoding: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    content_disposition: Mapped[str | None] = mapped_column(Text, nullable=True)
    content_language: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    cache_control: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    #: The Expires header exactly as sent (S3 echoes it back verbatim).
    expires: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: ``x-amz-meta-*`` without the prefix, names lowercased.
    user_meta: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class S3Object(_ObjectHeaders, Base):
    __tablename__ = "s3_objects"
    # The unique index is also the listing index: (bucket_id, key) in byte order.
    __table_args__ = (UniqueConstraint("bucket_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("s3_buckets.id", ondelete="CASCADE"))
    key: Mapped[bytes] = mapped_column(KeyBytes)
    size: Mapped[int] = mapped_column(BigInteger)
    #: Unquoted: 32 hex digits, or ``<hex>-<N>`` for a multipart object.
    etag: Mapped[str] = mapped_column(String(64))
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Blob path relative to the blob root, ``ab/<32 hex>``; indexed for recovery scans.
    #: None for a completed multipart object: its bytes are its part blobs (``S3ObjectPart``).
    blob: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    #: Algorithm (``CRC32``...) -> base64 value, for the additional checksums stored.
    checksums: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: ``FULL_OBJECT`` or ``COMPOSITE`` when ``checksums`` is not empty.
    checksum_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Sizes of the parts of a multipart object (for ?partNumber= reads); None otherwise.
    part_sizes: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)


class S3ObjectPart(Base):
    """One part blob of a completed multipart object, which is the concatenation of its parts.

    Completing an upload hands the part blobs over to the object instead of
    copying them into one file, so CompleteMultipartUpload moves no bytes.
    """

    __tablename__ = "s3_object_parts"

    object_id: Mapped[int] = mapped_column(ForeignKey("s3_objects.id", ondelete="CASCADE"), primary_key=True)
    #: 0-based position in the object.
    part_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Offset of the part's first byte in the object, so a range read selects only the parts it spans.
    start: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    #: Indexed for recovery scans, like ``S3Object.blob``.
    blob: Mapped[str] = mapped_column(String(128), index=True)


class S3MultipartUpload(_ObjectHeaders, Base):
    __tablename__ = "s3_multipart_uploads"
    # ListMultipartUploads orders by key, then by initiation (the autoincrement id).
    __table_args__ = (Index("ix_s3_multipart_uploads_bucket_key", "bucket_id", "key", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(String(128), unique=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("s3_buckets.id", ondelete="CASCADE"))
    key: Mapped[bytes] = mapped_column(KeyBytes)
    initiated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    owner: Mapped[str] = mapped_column(String(64))
    checksum_algorithm: Mapped[str | None] = mapped_column(String(16), nullable=True)
    checksum_type: Mapped[str | None] = mapped_column(String(16), nullable=True)


class S3UploadPart(Base):
    __tablename__ = "s3_upload_parts"

    upload_pk: Mapped[int] = mapped_column(
        ForeignKey("s3_multipart_uploads.id", ondelete="CASCADE"), primary_key=True
    )
    part_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(64))
    last_modified: Mapped[datetime] = mapped_column(UtcDateTime)
    blob: Mapped[str] = mapped_column(String(128), index=True)
    checksums: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
