"""Amazon S3: the HTTP side of the object store.

Handlers translate S3 requests (already parsed against botocore's model) into
calls on the :class:`~sagestack.storage.api.ObjectStore` in
``ctx.platform.storage`` — the embedded store or an external one —
and its results and errors into S3's wire behaviour. The wire itself (root
elements of the XML bodies included) is :mod:`sagestack.aws.protocols.s3`'s.
"""

from sagestack.services.s3 import buckets, listing, multipart, objects, policy, tagging

__all__ = ["buckets", "listing", "multipart", "objects", "policy", "tagging"]
