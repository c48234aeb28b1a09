"""S3's dialect of rest-xml, configured from the data below.

What S3 adds to rest-xml: its own authentication errors and canonical paths
(sigv4's "s3" family), virtual-hosted bucket addressing, uploads streamed to the
handler rather than buffered, 405 for a method no operation takes, and the root
elements of its response bodies.
"""

from __future__ import annotations

from sagestack.aws.errors import AwsError
from sagestack.aws.protocols.rest_xml import RestXmlProtocol

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"

#: Root elements of S3's XML response bodies by output shape, where they are not the shape's name.
XML_ROOTS = {
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
}


class S3Protocol(RestXmlProtocol):
    auth_family = "s3"
    virtual_hosts = True
    streams_payloads = True

    def no_route_error(self) -> AwsError:
        return AwsError("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)


S3 = S3Protocol(NAMESPACE, XML_ROOTS)
