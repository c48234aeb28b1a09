"""The object store as a role sees it: the platform's reads and writes for a job, checked first.

A training job, a transform job or an endpoint works with its execution role's permissions. The
platform does their S3 work itself (it downloads the channels, uploads the model), so each call
here is authorized against the role's policies (and the bucket's policy) exactly as the same call
made with the role's own keys would be: listing needs ``s3:ListBucket`` (with ``s3:prefix``),
reading ``s3:GetObject``, writing ``s3:PutObject``. A denial is S3's own AccessDenied error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from sagestack.authz.authorizer import Authorizer
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.identity import IamRole
from sagestack.identity import Principal, role_session_principal
from sagestack.storage import ObjectStore
from sagestack.storage.api import BodyWriter, BucketInfo, ListResult, ObjectBody, ObjectInfo, ObjectMeta

#: The session name SageMaker gives the role sessions of the work it runs.
SESSION_NAME = "SageMaker"


def role_session(db: Database, account_id: str, role_arn: str, session_name: str = SESSION_NAME) -> Principal:
    """The principal of a session of ``role_arn``; a role that no longer exists is allowed nothing."""
    name = role_arn.rsplit("/", 1)[-1]
    with db.session() as session:
        role_id = session.scalar(select(IamRole.role_id).where(IamRole.name == name)) or "AROA"
    return role_session_principal(account_id, role_id, name, session_name)


def _bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def _object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


class RoleScopedStore:
    """The calls a job's work makes on the object store, each authorized for ``principal`` first."""

    def __init__(self, store: ObjectStore, authorizer: Authorizer, principal: Principal) -> None:
        self.store = store
        self.authorizer = authorizer
        self.principal = principal

    def _require(self, action: str, resource: str, context: dict[str, str] | None = None) -> None:
        self.authorizer.require(self.principal, action, resource, context)

    def _may(self, action: str, resource: str) -> bool:
        try:
            self._require(action, resource)
        except AwsError:
            return False
        return True

    # --- buckets
    def head_bucket(self, name: str) -> BucketInfo:
        self._require("s3:ListBucket", _bucket_arn(name))
        return self.store.head_bucket(name)

    def get_bucket(self, name: str) -> BucketInfo:
        self._require("s3:ListBucket", _bucket_arn(name))
        return self.store.get_bucket(name)

    # --- reading
    def list_objects(self, bucket: str, prefix: str = "", delimiter: str | None = None, marker: str | None = None,
                     max_keys: int = 1000) -> ListResult:
        self._require("s3:ListBucket", _bucket_arn(bucket), {"s3:prefix": prefix})
        result = self.store.list_objects(bucket, prefix, delimiter, marker, max_keys)
        # Listing needs ListBucket only; a reader links an object's blob directly, so one it may not
        # read loses its blob path here and its bytes can only come through open_object (checked).
        contents = [info if info.blob_path is None or self._may("s3:GetObject", _object_arn(bucket, info.key))
                    else dataclasses.replace(info, blob_path=None) for info in result.contents]
        return result._replace(contents=contents)

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        self._require("s3:GetObject", _object_arn(bucket, key))
        return self.store.head_object(bucket, key)

    def open_object(self, bucket: str, key: str, byte_range: tuple[int | None, int | None] | None = None, *,
                    part_number: int | None = None) -> ObjectBody:
        self._require("s3:GetObject", _object_arn(bucket, key))
        return self.store.open_object(bucket, key, byte_range, part_number=part_number)

    # --- writing
    def begin_write(self, algorithms: Iterable[str] = (), max_size: int | None = None) -> BodyWriter:
        if max_size is None:
            return self.store.begin_write(algorithms)
        return self.store.begin_write(algorithms, max_size)

    def put_object(self, bucket: str, key: str, writer: BodyWriter, meta: ObjectMeta, *args: Any,
                   **kwargs: Any) -> ObjectInfo:
        try:
            self._require("s3:PutObject", _object_arn(bucket, key))
        except BaseException:
            writer.abort()
            raise
        return self.store.put_object(bucket, key, writer, meta, *args, **kwargs)
