"""The object store's interface: value types and the :class:`ObjectStore` protocol.

The S3 HTTP handlers talk only to this interface. :class:`~sagestack.storage.engine.LocalObjectStore`
implements it on local disk plus the metadata DB; an "external mode" store that
forwards to a real S3 can implement the same protocol later.

Conventions: keys are ``str`` (any Unicode, at most 1024 UTF-8 bytes); ETags are
given **quoted**, as on the wire (``"9b2c..."`` / ``"9b2c...-3"``); checksum
algorithms are S3's upper-case names (``CRC32``, ``CRC32C``, ``CRC64NVME``,
``SHA1``, ``SHA256``) and values are base64, as in ``x-amz-checksum-*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from sagestack.aws.errors import AwsError
from sagestack.storage import checksums as cks

DEFAULT_CONTENT_TYPE = "binary/octet-stream"


@dataclass(frozen=True)
class ObjectMeta:
    """What a client sets on an object besides its bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    #: The Expires header verbatim.
    expires: str | None = None
    #: ``x-amz-meta-*`` headers: name without the prefix (lowercase) -> value.
    user: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChecksumExpectations:
    """What the request claims about its body; verified when the write commits.

    ``checksums`` holds ``x-amz-checksum-<alg>`` values (header or aws-chunked
    trailer); ``size`` the decoded content length, if the client declared one.
    """

    content_md5: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    size: int | None = None

    def validate(self) -> None:
        """Reject malformed values up front (InvalidDigest / InvalidRequest), before any body is read."""
        if self.content_md5 is not None:
            cks.decode_content_md5(self.content_md5)
        if len(self.checksums) > 1:
            raise AwsError(
                "InvalidRequest",
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
            )
        for algorithm, value in self.checksums.items():
            cks.decode_checksum(cks.normalize_algorithm(algorithm), value)

    def algorithms(self) -> set[str]:
        return {cks.normalize_algorithm(a) for a in self.checksums}


@dataclass(frozen=True)
class BucketInfo:
    name: str
    region: str
    owner: str
    created: datetime


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    #: Quoted, as sent in the ETag header.
    etag: str
    #: UTC, whole seconds (S3's precision).
    last_modified: datetime
    meta: ObjectMeta
    #: Stored additional checksums: algorithm -> base64 (``...-N`` for a COMPOSITE one).
    checksums: dict[str, str] = field(default_factory=dict)
    #: ``FULL_OBJECT`` / ``COMPOSITE`` when ``checksums`` is set.
    checksum_type: str | None = None
    #: Part count of a multipart object (``x-amz-mp-parts-count``), else None.
    parts_count: int | None = None
    #: Local blob file; None in an external store.
    blob_path: Path | None = None


class ObjectBody(NamedTuple):
    """An open object: its info, its bytes (1 MiB chunks) and the byte span served."""

    info: ObjectInfo
    chunks: Iterator[bytes]
    #: Inclusive (first, last) when a range or part was asked for, else None.
    span: tuple[int, int] | None


class ListResult(NamedTuple):
    contents: list[ObjectInfo]
    common_prefixes: list[str]
    is_truncated: bool
    #: The last key or common prefix returned, when truncated: the next page's marker.
    next_marker: str | None


class DeleteResult(NamedTuple):
    key: str
    error: AwsError | None = None


@dataclass(frozen=True)
class UploadInfo:
    bucket: str
    key: str
    upload_id: str
    initiated: datetime
    owner: str
    meta: ObjectMeta
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    size: int
    #: Quoted.
    etag: str
    last_modified: datetime
    checksums: dict[str, str] = field(default_factory=dict)


class CompletedPart(NamedTuple):
    """One ``<Part>`` of a CompleteMultipartUpload body."""

    part_number: int
    #: Quoted or not; both are accepted like S3 does.
    etag: str
    #: ``ChecksumCRC32`` etc. given for this part: algorithm -> base64.
    checksums: dict[str, str] = {}


class PartsPage(NamedTuple):
    upload: UploadInfo
    parts: list[PartInfo]
    is_truncated: bool
    next_part_number_marker: int | None


class UploadsPage(NamedTuple):
    uploads: list[UploadInfo]
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None
    next_upload_id_marker: str | None


class BodyWriter(Protocol):
    """Receives a request body chunk by chunk; nothing is visible until a store method commits it."""

    @property
    def size(self) -> int: ...

    def write(self, chunk: bytes) -> None: ...

    def abort(self) -> None: ...


@runtime_checkable
class ObjectStore(Protocol):
    """Everything the S3 API layer needs from storage. All methods are synchronous and thread-safe."""

    # --- buckets ---
    def create_bucket(self, name: str, region: str, owner: str) -> BucketInfo: ...
    def head_bucket(self, name: str) -> BucketInfo: ...
    def get_bucket(self, name: str) -> BucketInfo: ...
    def list_buckets(self, owner: str | None = None) -> list[BucketInfo]: ...
    def delete_bucket(self, name: str) -> None: ...

    # --- bucket policies (the document is stored as given; checking it is the S3 layer's job) ---
    def put_bucket_policy(self, bucket: str, document: str) -> None:
        """Store (or replace) the bucket's policy, atomically; NoSuchBucket without the bucket."""
        ...
    def get_bucket_policy(self, bucket: str) -> str:
        """The stored document; NoSuchBucket without the bucket, NoSuchBucketPolicy without a policy."""
        ...
    def delete_bucket_policy(self, bucket: str) -> None:
        """Drop the bucket's policy (none is fine); NoSuchBucket without the bucket."""
        ...
    def bucket_policy(self, bucket: str) -> str | None:
        """The stored document, or None when the bucket has none or does not exist.

        The authorizer's read: one indexed lookup, no upstream call, never raises for a missing bucket.
        """
        ...

    # --- objects ---
    def begin_write(self, algorithms: Iterable[str] = (), max_size: int = ...) -> BodyWriter: ...
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
    ) -> ObjectInfo: ...
    def head_object(self, bucket: str, key: str) -> ObjectInfo: ...
    def open_object(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int | None, int | None] | None = None,
        *,
        part_number: int | None = None,
    ) -> ObjectBody: ...
    def delete_object(self, bucket: str, key: str) -> None: ...
    def delete_objects(self, bucket: str, keys: Sequence[str]) -> list[DeleteResult]: ...
    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        meta: ObjectMeta | None = None,
        *,
        checksum_algorithm: str | None = None,
    ) -> ObjectInfo: ...
    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        marker: str | None = None,
        max_keys: int = 1000,
    ) -> ListResult: ...

    # --- multipart ---
    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta,
        owner: str = "",
        *,
        checksum_algorithm: str | None = None,
        checksum_type: str | None = None,
    ) -> UploadInfo: ...
    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo: ...
    def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        writer: BodyWriter,
        expected: ChecksumExpectations | None = None,
    ) -> PartInfo: ...
    def upload_part_copy(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        src_bucket: str,
        src_key: str,
        copy_range: str | None = None,
    ) -> PartInfo: ...
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
    ) -> ObjectInfo: ...
    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None: ...
    def list_parts(
        self, bucket: str, key: str, upload_id: str, part_number_marker: int = 0, max_parts: int = 1000
    ) -> PartsPage: ...
    def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        key_marker: str | None = None,
        upload_id_marker: str | None = None,
        max_uploads: int = 1000,
    ) -> UploadsPage: ...
