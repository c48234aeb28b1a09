"""The embedded S3 object store (storage engine only; the HTTP API sits on top).

:class:`ObjectStore` is the interface the S3 handlers use; :class:`LocalObjectStore`
implements it with blob files under ``<data>/objects`` and rows in the metadata DB.
"""

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
    ObjectStore,
    PartInfo,
    PartsPage,
    UploadInfo,
    UploadsPage,
)
from sagestack.storage.blobs import BlobWriter
from sagestack.storage.engine import LocalObjectStore, RecoveryReport

__all__ = [
    "BlobWriter",
    "BodyWriter",
    "BucketInfo",
    "ChecksumExpectations",
    "CompletedPart",
    "DeleteResult",
    "ListResult",
    "LocalObjectStore",
    "ObjectBody",
    "ObjectInfo",
    "ObjectMeta",
    "ObjectStore",
    "PartInfo",
    "PartsPage",
    "RecoveryReport",
    "UploadInfo",
    "UploadsPage",
]
