"""Amazon S3: the HTTP side of the object store.

Handlers translate S3 requests (already parsed against botocore's model) into
calls on the :class:`~sagestack.storage.api.ObjectStore` in
``ctx.platform.storage`` — the embedded store or an external one —
and its results and errors into S3's wire behaviour.
"""

from sagestack.aws.protocols.rest import register_xml_roots
from sagestack.services.s3 import buckets, listing, multipart, objects, tagging
from sagestack.services.s3.common import NAMESPACE

__all__ = ["buckets", "listing", "multipart", "objects", "tagging"]

# Root elements of S3's XML response bodies (the model does not name them).
register_xml_roots(
    "s3",
    NAMESPACE,
    {
        "ListBucketsOutput": "ListAllMyBucketsResult",
        "ListObjectsOutput": "ListBucketResult",
        "ListObjectsV2Output": "ListBucketResult",
        "ListObjectVersionsOutput": "ListVersionsResult",
        "ListMultipartUploadsOutput": "ListMultipartUploadsResult",
        "ListPartsOutput": "ListPartsResult",
        "CreateMultipartUploadOutput": "InitiateMultipartUploadResult",
        "CompleteMultipartUploadOutput": "CompleteMultipartUploadResult",
        "DeleteObjectsOutput": "DeleteResult",
        "GetBucketLocationOutput": "LocationConstraint",
        "GetBucketVersioningOutput": "VersioningConfiguration",
        "GetBucketAclOutput": "AccessControlPolicy",
        "GetObjectAclOutput": "AccessControlPolicy",
        "GetBucketTaggingOutput": "Tagging",
        "GetObjectTaggingOutput": "Tagging",
    },
)
