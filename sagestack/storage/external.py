"""External mode: buckets and objects live in another S3-compatible store, reached with boto3.

:class:`ExternalObjectStore` implements :class:`~sagestack.storage.api.ObjectStore`
by forwarding every call, so the S3 handlers and the rest of the platform work
unchanged on top of it. Request bodies are first spooled to a local temp file
(hashed on the way, exactly as the embedded store does) and only then sent
upstream with their Content-MD5: a truncated or corrupted body never reaches
the external store, and the upstream checks what it receives end to end.

The upstream's own errors come back as the same S3 errors (code, status,
message). Buckets are reported as owned by this installation's account.

Bucket policies are not forwarded: they govern access to this server (their
principals are this installation's), so, like bucket tags, they are kept here,
in files under ``<spool dir>/bucket-policies`` (:mod:`.policy_files`); the bucket
itself is still checked upstream. A bucket deleted upstream behind this
server's back keeps its file until a bucket of that name is created through
this server again.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from sagestack.aws.errors import AwsError
from sagestack.storage import checksums as cks
from sagestack.storage import errors, names
from sagestack.storage.api import (
    DEFAULT_CONTENT_TYPE,
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
from sagestack.storage.blobs import CHUNK_SIZE, BlobStore, BlobWriter, FinishedBody, hash_file, verify_body
from sagestack.storage.policy_files import PolicyFiles

_CHECKSUM_MEMBERS = {"CRC32": "ChecksumCRC32", "CRC32C": "ChecksumCRC32C", "CRC64NVME": "ChecksumCRC64NVME",
                     "SHA1": "ChecksumSHA1", "SHA256": "ChecksumSHA256"}
#: What an error without a body (HEAD) means, by status.
_HEAD_ERRORS = {404: "NoSuchKey", 403: "AccessDenied", 412: "PreconditionFailed", 416: "InvalidRange"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _upstream_error(exc: ClientError, bucket: str | None = None, key: str | None = None) -> AwsError:
    """The upstream's error as our own: same code, status and message."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    code = str(error.get("Code", "InternalError"))
    if code.isdigit():  # a HEAD error has no body: name it from the status
        code = _HEAD_ERRORS.get(int(code), "InternalError")
        if code == "NoSuchKey" and key is None:
            return errors.no_such_bucket(bucket or "")
        if code == "NoSuchKey":
            return errors.no_such_key(key or "")
    message = str(error.get("Message") or code)
    extra = {k: str(v) for k, v in error.items() if k not in ("Code", "Message") and isinstance(v, str)}
    return AwsError(code, message, int(status), sender_fault=int(status) < 500, extra=extra)


def _checksums_of(response: dict[str, Any]) -> dict[str, str]:
    return {alg: response[m] for alg, m in _CHECKSUM_MEMBERS.items() if response.get(m)}


def _meta_of(response: dict[str, Any]) -> ObjectMeta:
    expires = response.get("ExpiresString") or response.get("Expires")
    if isinstance(expires, datetime):
        expires = expires.strftime("%a, %d %b %Y %H:%M:%S GMT")
    return ObjectMeta(
        content_type=response.get("ContentType") or DEFAULT_CONTENT_TYPE,
        content_encoding=response.get("ContentEncoding"),
        content_disposition=response.get("ContentDisposition"),
        content_language=response.get("ContentLanguage"),
        cache_control=response.get("CacheControl"),
        expires=expires,
        user=dict(response.get("Metadata") or {}),
    )


def _meta_params(meta: ObjectMeta) -> dict[str, Any]:
    params: dict[str, Any] = {"ContentType": meta.content_type, "Metadata": dict(meta.user)}
    for member, value in (("ContentEncoding", meta.content_encoding),
                          ("ContentDisposition", meta.content_disposition),
                          ("ContentLanguage", meta.content_language),
                          ("CacheControl", meta.cache_control),
                          ("Expires", meta.expires)):
        if value is not None:
            params[member] = value
    return params


def _whole_seconds(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


class _Chunks:
    """A boto3 StreamingBody as an iterator of ~1 MiB chunks with close()."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._iter = body.iter_chunks(CHUNK_SIZE)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._iter)

    def close(self) -> None:
        self._body.close()


class ExternalObjectStore:
    """:class:`~sagestack.storage.api.ObjectStore` on an external S3 endpoint."""

    def __init__(self, endpoint_url: str, access_key: str | None, secret_key: str | None, region: str,
                 owner: str, spool_dir: Path, verify: str | bool | None = None) -> None:
        self.owner = owner
        self.region = region
        # Spooled bodies go where the embedded store keeps its temp files; a crash
        # leaves only temp files, which start-up removes.
        self._spool = BlobStore(spool_dir)
        self._policies = PolicyFiles(spool_dir / "bucket-policies")
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            verify=verify,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=64,
                # Our own Content-MD5 covers bodies end to end; no second checksum pass.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def recover(self, grace_seconds: float = 0.0) -> int:
        return self._spool.remove_temp_files(grace_seconds) + self._policies.remove_temp_files(grace_seconds)

    def _call(self, method: str, bucket: str | None = None, key: str | None = None, **params: Any) -> Any:
        try:
            return getattr(self.client, method)(**params)
        except ClientError as exc:
            raise _upstream_error(exc, bucket, key) from None

    # ------------------------------------------------------------------ buckets
    def create_bucket(self, name: str, region: str, owner: str) -> BucketInfo:
        names.check_bucket_name(name)
        params: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._call("create_bucket", name, **params)
        self._policies.delete(name)  # a namesake's policy, left by a bucket deleted upstream
        return BucketInfo(name, region, self.owner, _whole_seconds(None))

    def get_bucket(self, name: str) -> BucketInfo:
        response = self._call("head_bucket", name, Bucket=name)
        region = response.get("BucketRegion") or self.region
        created = _EPOCH
        for bucket in self._call("list_buckets").get("Buckets", []):
            if bucket["Name"] == name:
                created = _whole_seconds(bucket.get("CreationDate"))
        return BucketInfo(name, region, self.owner, created)

    def head_bucket(self, name: str) -> BucketInfo:
        response = self._call("head_bucket", name, Bucket=name)
        return BucketInfo(name, response.get("BucketRegion") or self.region, self.owner, _EPOCH)

    def list_buckets(self, owner: str | None = None) -> list[BucketInfo]:
        buckets = self._call("list_buckets").get("Buckets", [])
        return [
            BucketInfo(b["Name"], b.get("BucketRegion") or self.region, self.owner,
                       _whole_seconds(b.get("CreationDate")))
            for b in sorted(buckets, key=lambda b: b["Name"])
        ]

    def delete_bucket(self, name: str) -> None:
        self._call("delete_bucket", name, Bucket=name)
        self._policies.delete(name)

    # ------------------------------------------------------------------ bucket policies (kept here)
    def put_bucket_policy(self, bucket: str, document: str) -> None:
        self.head_bucket(bucket)
        self._policies.write(bucket, document)

    def get_bucket_policy(self, bucket: str) -> str:
        self.head_bucket(bucket)
        document = self._policies.read(bucket)
        if document is None:
            raise errors.no_such_bucket_policy(bucket)
        return document

    def delete_bucket_policy(self, bucket: str) -> None:
        self.head_bucket(bucket)
        self._policies.delete(bucket)

    def bucket_policy(self, bucket: str) -> str | None:
        return self._policies.read(bucket)

    # ------------------------------------------------------------------ writing
    def begin_write(self, algorithms: Iterable[str] = (), max_size: int = errors.MAX_OBJECT_PUT_SIZE) -> BlobWriter:
        return self._spool.writer(algorithms, max_size)

    @staticmethod
    def _own_writer(writer: BodyWriter) -> BlobWriter:
        if not isinstance(writer, BlobWriter):
            raise TypeError("an ExternalObjectStore only sends writers from its own begin_write()")
        return writer

    @staticmethod
    def _body_params(body: FinishedBody, digests: dict[str, bytes]) -> dict[str, Any]:
        """Content-MD5 and the checksums to send upstream, so it verifies what it receives."""
        params: dict[str, Any] = {"ContentMD5": base64.b64encode(body.md5).decode(), "ContentLength": body.size}
        for algorithm, digest in digests.items():
            params[_CHECKSUM_MEMBERS[algorithm]] = cks.encode(digest)
        return params

    def put_object(self, bucket: str, key: str, writer: BodyWriter, meta: ObjectMeta,
                   expected: ChecksumExpectations | None = None, *, if_match: str | None = None,
                   if_none_match: str | None = None) -> ObjectInfo:
        writer = self._own_writer(writer)
        try:
            names.encode_key(key)
            names.check_user_metadata(meta.user)
            body = writer.finish()
            digests = verify_body(body, expected)
            params = {**_meta_params(meta), **self._body_params(body, digests)}
            if if_match is not None:
                params["IfMatch"] = if_match
            if if_none_match is not None:
                params["IfNoneMatch"] = if_none_match
            with open(body.tmp_path, "rb") as f:
                response = self._call("put_object", bucket, None, Bucket=bucket, Key=key, Body=f, **params)
        finally:
            writer.abort()
        checksums = {a: cks.encode(d) for a, d in digests.items()}
        return ObjectInfo(bucket, key, body.size, response.get("ETag") or f'"{body.md5.hex()}"',
                          _whole_seconds(None), meta, checksums, "FULL_OBJECT" if checksums else None)

    # ------------------------------------------------------------------ reading
    def _info(self, bucket: str, key: str, response: dict[str, Any], size: int | None = None) -> ObjectInfo:
        checksums = _checksums_of(response)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=response.get("ContentLength", 0) if size is None else size,
            etag=response.get("ETag", '""'),
            last_modified=_whole_seconds(response.get("LastModified")),
            meta=_meta_of(response),
            checksums=checksums,
            checksum_type=response.get("ChecksumType") or ("FULL_OBJECT" if checksums else None),
            parts_count=response.get("PartsCount"),
        )

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        names.encode_key(key)
        response = self._call("head_object", bucket, key, Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return self._info(bucket, key, response)

    def open_object(self, bucket: str, key: str, byte_range: tuple[int | None, int | None] | None = None, *,
                    part_number: int | None = None) -> ObjectBody:
        if byte_range is not None and part_number is not None:
            raise AwsError("InvalidRequest", "Cannot specify both Range header and partNumber query parameter.")
        names.encode_key(key)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if byte_range is not None:
            first, last = byte_range
            params["Range"] = f"bytes={'' if first is None else first}-{'' if last is None else last}"
        elif part_number is not None:
            params["PartNumber"] = part_number
        else:
            params["ChecksumMode"] = "ENABLED"
        response = self._call("get_object", bucket, key, **params)
        span = None
        content_range = response.get("ContentRange")
        size = response.get("ContentLength", 0)
        if content_range:  # "bytes first-last/size"
            spec, _, total = content_range.removeprefix("bytes ").partition("/")
            first_text, _, last_text = spec.partition("-")
            span, size = (int(first_text), int(last_text)), int(total)
        return ObjectBody(self._info(bucket, key, response, size), _Chunks(response["Body"]), span)

    # ------------------------------------------------------------------ deleting
    def delete_object(self, bucket: str, key: str) -> None:
        names.encode_key(key)
        self._call("delete_object", bucket, None, Bucket=bucket, Key=key)

    def delete_objects(self, bucket: str, keys: Sequence[str]) -> list[DeleteResult]:
        if not keys or len(keys) > 1000:
            raise errors.malformed_xml()
        response = self._call("delete_objects", bucket, None, Bucket=bucket,
                              Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        failed = {e["Key"]: AwsError(e.get("Code", "InternalError"), e.get("Message", ""), 400)
                  for e in response.get("Errors", [])}
        return [DeleteResult(k, failed.get(k)) for k in keys]

    # ------------------------------------------------------------------ copying
    def copy_object(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
                    meta: ObjectMeta | None = None, *, checksum_algorithm: str | None = None) -> ObjectInfo:
        if (src_bucket, src_key) == (dst_bucket, dst_key) and meta is None:
            raise errors.copy_to_itself()
        params: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key,
                                  "CopySource": {"Bucket": src_bucket, "Key": src_key}}
        if meta is not None:
            params.update(_meta_params(meta), MetadataDirective="REPLACE")
        if checksum_algorithm:
            params["ChecksumAlgorithm"] = cks.normalize_algorithm(checksum_algorithm)
        self._call("copy_object", dst_bucket, None, **params)
        return self.head_object(dst_bucket, dst_key)

    # ------------------------------------------------------------------ listing
    def list_objects(self, bucket: str, prefix: str = "", delimiter: str | None = None,
                     marker: str | None = None, max_keys: int = 1000) -> ListResult:
        max_keys = max(0, min(max_keys, 1000))
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            params["Delimiter"] = delimiter
        if marker:
            params["Marker"] = marker
        response = self._call("list_objects", bucket, None, **params)
        contents = [
            ObjectInfo(bucket, o["Key"], o["Size"], o["ETag"], _whole_seconds(o["LastModified"]), ObjectMeta())
            for o in response.get("Contents", [])
        ]
        prefixes = [p["Prefix"] for p in response.get("CommonPrefixes", [])]
        truncated = bool(response.get("IsTruncated"))
        last = max([c.key for c in contents] + prefixes, key=lambda k: k.encode("utf-8", "surrogatepass"),
                   default=None)
        return ListResult(contents, prefixes, truncated, last if truncated else None)

    # ------------------------------------------------------------------ multipart
    def _upload(self, bucket: str, key: str, upload_id: str, response: dict[str, Any]) -> UploadInfo:
        return UploadInfo(bucket, key, upload_id, _whole_seconds(response.get("Initiated")), self.owner,
                          ObjectMeta(), response.get("ChecksumAlgorithm"), response.get("ChecksumType"))

    def create_multipart_upload(self, bucket: str, key: str, meta: ObjectMeta, owner: str = "", *,
                                checksum_algorithm: str | None = None,
                                checksum_type: str | None = None) -> UploadInfo:
        names.encode_key(key)
        names.check_user_metadata(meta.user)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, **_meta_params(meta)}
        if checksum_algorithm:
            params["ChecksumAlgorithm"] = cks.normalize_algorithm(checksum_algorithm)
        if checksum_type:
            params["ChecksumType"] = checksum_type.upper()
        response = self._call("create_multipart_upload", bucket, None, **params)
        return UploadInfo(bucket, key, response["UploadId"], _whole_seconds(None), self.owner, meta,
                          response.get("ChecksumAlgorithm"), response.get("ChecksumType"))

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        response = self._call("list_parts", bucket, None, Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=1)
        return self._upload(bucket, key, upload_id, response)

    def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, writer: BodyWriter,
                    expected: ChecksumExpectations | None = None) -> PartInfo:
        writer = self._own_writer(writer)
        try:
            upload = self.get_upload(bucket, key, upload_id)
            body = writer.finish()
            digests = verify_body(body, expected)
            algorithm = upload.checksum_algorithm
            if algorithm and algorithm not in digests:
                digests.update(hash_file(body.tmp_path, [algorithm]))
            # The upstream upload wants its own algorithm's checksum with every part, and only that one.
            params = self._body_params(body, {algorithm: digests[algorithm]} if algorithm else {})
            with open(body.tmp_path, "rb") as f:
                response = self._call("upload_part", bucket, None, Bucket=bucket, Key=key, UploadId=upload_id,
                                      PartNumber=part_number, Body=f, **params)
        finally:
            writer.abort()
        checksums = {a: cks.encode(d) for a, d in digests.items()}
        return PartInfo(part_number, body.size, response.get("ETag") or f'"{body.md5.hex()}"',
                        _whole_seconds(None), checksums)

    def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int, src_bucket: str,
                         src_key: str, copy_range: str | None = None) -> PartInfo:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number,
                                  "CopySource": {"Bucket": src_bucket, "Key": src_key}}
        if copy_range is not None:
            params["CopySourceRange"] = copy_range
        response = self._call("upload_part_copy", bucket, None, **params)
        result = response.get("CopyPartResult", {})
        head = self._call("list_parts", bucket, None, Bucket=bucket, Key=key, UploadId=upload_id,
                          PartNumberMarker=part_number - 1, MaxParts=1)
        size = next((p["Size"] for p in head.get("Parts", []) if p["PartNumber"] == part_number), 0)
        return PartInfo(part_number, size, result.get("ETag", '""'), _whole_seconds(result.get("LastModified")),
                        _checksums_of(result))

    def complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: Sequence[CompletedPart],
                                  expected: ChecksumExpectations | None = None, *, if_match: str | None = None,
                                  if_none_match: str | None = None) -> ObjectInfo:
        if not parts:
            raise errors.malformed_xml()
        listed = []
        for part in parts:
            item: dict[str, Any] = {"PartNumber": part.part_number, "ETag": part.etag}
            for algorithm, value in part.checksums.items():
                item[_CHECKSUM_MEMBERS[cks.normalize_algorithm(algorithm)]] = value
            listed.append(item)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id,
                                  "MultipartUpload": {"Parts": listed}}
        if expected is not None:
            for algorithm, value in expected.checksums.items():
                params[_CHECKSUM_MEMBERS[cks.normalize_algorithm(algorithm)]] = value
            if expected.size is not None:
                params["MpuObjectSize"] = expected.size
        if if_match is not None:
            params["IfMatch"] = if_match
        if if_none_match is not None:
            params["IfNoneMatch"] = if_none_match
        self._call("complete_multipart_upload", bucket, None, **params)
        return self.head_object(bucket, key)

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._call("abort_multipart_upload", bucket, None, Bucket=bucket, Key=key, UploadId=upload_id)

    def list_parts(self, bucket: str, key: str, upload_id: str, part_number_marker: int = 0,
                   max_parts: int = 1000) -> PartsPage:
        response = self._call("list_parts", bucket, None, Bucket=bucket, Key=key, UploadId=upload_id,
                              PartNumberMarker=part_number_marker, MaxParts=max(0, min(max_parts, 1000)))
        parts = [PartInfo(p["PartNumber"], p["Size"], p["ETag"], _whole_seconds(p.get("LastModified")),
                          _checksums_of(p)) for p in response.get("Parts", [])]
        truncated = bool(response.get("IsTruncated"))
        next_marker = response.get("NextPartNumberMarker") or (parts[-1].part_number if parts else None)
        return PartsPage(self._upload(bucket, key, upload_id, response), parts, truncated, next_marker)

    def list_multipart_uploads(self, bucket: str, prefix: str = "", delimiter: str | None = None,
                               key_marker: str | None = None, upload_id_marker: str | None = None,
                               max_uploads: int = 1000) -> UploadsPage:
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxUploads": max(0, min(max_uploads, 1000))}
        if delimiter:
            params["Delimiter"] = delimiter
        if key_marker:
            params["KeyMarker"] = key_marker
        if upload_id_marker:
            params["UploadIdMarker"] = upload_id_marker
        response = self._call("list_multipart_uploads", bucket, None, **params)
        uploads = [self._upload(bucket, u["Key"], u["UploadId"], u) for u in response.get("Uploads", [])]
        prefixes = [p["Prefix"] for p in response.get("CommonPrefixes", [])]
        return UploadsPage(uploads, prefixes, bool(response.get("IsTruncated")), response.get("NextKeyMarker"),
                           response.get("NextUploadIdMarker"))

