"""Buckets of the local object store: create, look up, list and delete (with their unfinished uploads),
and their policies (a column of the bucket row, so a policy goes with its bucket)."""

from __future__ import annotations

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sagestack.db.base import Database
from sagestack.db.models.objects import S3Bucket, S3MultipartUpload, S3Object, S3UploadPart
from sagestack.storage import errors, names
from sagestack.storage.api import (
    BucketInfo,
)
from sagestack.storage.blobs import BlobStore
from sagestack.storage.object_rows import (
    now_seconds,
)


class BucketOps:
    """The bucket operations of :class:`~sagestack.storage.engine.LocalObjectStore`, and what its other rooms
    build on: the metadata DB and the blob files."""

    db: Database
    blobs: BlobStore

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
                row = S3Bucket(name=name, region=region, owner=owner, created=now_seconds())
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
    # bucket policies
    # ======================================================================================
    def put_bucket_policy(self, bucket: str, document: str) -> None:
        self._set_policy(bucket, document)

    def delete_bucket_policy(self, bucket: str) -> None:
        self._set_policy(bucket, None)

    def _set_policy(self, bucket: str, document: str | None) -> None:
        # One UPDATE of one row: atomic, and durable once the transaction commits.
        with self.db.transaction() as s:
            result = s.execute(update(S3Bucket).where(S3Bucket.name == bucket).values(policy=document))
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise errors.no_such_bucket(bucket)

    def get_bucket_policy(self, bucket: str) -> str:
        with self.db.session() as s:
            row = s.execute(select(S3Bucket.id, S3Bucket.policy).where(S3Bucket.name == bucket)).first()
        if row is None:
            raise errors.no_such_bucket(bucket)
        if row.policy is None:
            raise errors.no_such_bucket_policy(bucket)
        return row.policy

    def bucket_policy(self, bucket: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(S3Bucket.policy).where(S3Bucket.name == bucket))
