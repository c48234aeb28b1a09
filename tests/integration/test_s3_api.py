"""S3 over real sockets with boto3's client API: buckets, objects, reads, listings, multipart, errors."""

from __future__ import annotations

import base64
import datetime as dt
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.s3_support import error_of, md5_b64, md5_hex, unique_bucket

MiB = 1024 * 1024


@pytest.fixture
def s3(server: ServerProcess) -> Any:
    return server.client("s3")


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    yield name


def _crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# ---------------------------------------------------------------- buckets


def test_bucket_lifecycle(s3: Any) -> None:
    name = unique_bucket()
    assert s3.create_bucket(Bucket=name)["Location"] == f"/{name}"
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    listed = s3.list_buckets()
    assert name in [b["Name"] for b in listed["Buckets"]]
    assert len(listed["Owner"]["ID"]) == 64 and listed["Owner"]["DisplayName"]
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket=name)
    # A bare 404: the SageMaker SDK compares this code as a string.
    assert error_of(excinfo)[:2] == (404, "404")
    assert excinfo.value.response["Error"]["Message"] == "Not Found"


def test_create_bucket_twice_us_east_1_is_ok_elsewhere_409(server: ServerProcess, s3: Any) -> None:
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    assert s3.create_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    west = server.client("s3", region_name="eu-west-1")
    other = unique_bucket()
    west.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert west.get_bucket_location(Bucket=other)["LocationConstraint"] == "eu-west-1"
    with pytest.raises(ClientError) as excinfo:
        west.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert error_of(excinfo)[:2] == (409, "BucketAlreadyOwnedByYou")
    assert excinfo.value.response["Error"]["BucketName"] == other


@pytest.mark.parametrize("name", ["UPPER", "ab", "a..b", "-start", "192.168.1.1", "under_score"])
def test_invalid_bucket_name(s3: Any, name: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=name)
    assert error_of(excinfo)[:2] == (400, "InvalidBucketName")


def test_explicit_us_east_1_constraint_refused(s3: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=unique_bucket(), CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    # S3 says InvalidLocationConstraint; the model's enum (which lacks us-east-1) already refuses it here.
    status, code, _ = error_of(excinfo)
    assert status == 400 and code in ("InvalidLocationConstraint", "InvalidArgument")


def test_key_and_metadata_limits(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"")
    assert error_of(excinfo)[:2] == (400, "KeyTooLongError")
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="meta", Body=b"", Metadata={"big": "x" * 2100})
    assert error_of(excinfo)[:2] == (400, "MetadataTooLarge")


def test_head_bucket_expected_owner(s3: Any, bucket: str, server: ServerProcess) -> None:
    account = server.client("sts").get_caller_identity()["Account"]
    assert s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner="111122223333")
    assert error_of(excinfo)[0] == 403


def test_delete_bucket_not_empty_and_missing(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=bucket)
    assert error_of(excinfo)[:2] == (409, "BucketNotEmpty")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=unique_bucket())
    assert error_of(excinfo)[:2] == (404, "NoSuchBucket")


def test_put_into_missing_bucket(s3: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=unique_bucket(), Key="k", Body=b"x" * (2 * MiB))
    assert error_of(excinfo)[:2] == (404, "NoSuchBucket")


# ---------------------------------------------------------------- objects


def test_put_get_metadata_round_trip(s3: Any, bucket: str) -> None:
    body = b"hello, object store\n"
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    put = s3.put_object(
        Bucket=bucket, Key="dir/ü file.txt", Body=body, ContentType="text/plain; charset=utf-8",
        ContentEncoding="identity", ContentDisposition='attachment; filename="f.txt"', ContentLanguage="en",
        CacheControl="max-age=60", Expires=expires, Metadata={"Project": "demo", "x": "1"},
    )
    assert put["ETag"] == f'"{md5_hex(body)}"'
    got = s3.get_object(Bucket=bucket, Key="dir/ü file.txt")
    assert got["Body"].read() == body
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == len(body)
    assert got["ContentType"] == "text/plain; charset=utf-8"
    assert got["ContentEncoding"] == "identity"
    assert got["ContentDisposition"] == 'attachment; filename="f.txt"'
    assert got["ContentLanguage"] == "en" and got["CacheControl"] == "max-age=60"
    assert got["ExpiresString"] == "Wed, 02 Jan 2030 03:04:05 GMT"
    assert got["Metadata"] == {"project": "demo", "x": "1"}
    assert got["AcceptRanges"] == "bytes"
    head = s3.head_object(Bucket=bucket, Key="dir/ü file.txt")
    assert head["ContentLength"] == len(body) and head["Metadata"] == got["Metadata"]
    assert isinstance(head["LastModified"], dt.datetime)


def test_default_content_type_and_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b"" and got["ContentLength"] == 0
    assert got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


def test_response_overrides(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data", ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="k", ResponseContentType="application/json",
                        ResponseContentDisposition="inline", ResponseCacheControl="no-cache")
    assert got["ContentType"] == "application/json"
    assert got["ContentDisposition"] == "inline" and got["CacheControl"] == "no-cache"


def test_missing_key(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="nope")
    assert error_of(excinfo)[:2] == (404, "NoSuchKey")
    assert excinfo.value.response["Error"]["Key"] == "nope"
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="nope")
    assert error_of(excinfo)[:2] == (404, "404")


def test_delete_object_and_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("a", "b", "c", "d"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.delete_object(Bucket=bucket, Key="a")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="a")["ResponseMetadata"]["HTTPStatusCode"] == 204  # idempotent
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b"}, {"Key": "missing"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["b", "missing"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}, {"Key": "d"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_copy_object_directives(s3: Any, bucket: str) -> None:
    other = unique_bucket()
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", ContentType="text/csv", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{md5_hex(b"payload")}"'
    head = s3.head_object(Bucket=other, Key="dst")
    assert head["ContentType"] == "text/csv" and head["Metadata"] == {"a": "1"}
    s3.copy_object(Bucket=other, Key="dst2", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   ContentType="text/plain", Metadata={"b": "2"})
    head = s3.head_object(Bucket=other, Key="dst2")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"b": "2"}
    assert s3.get_object(Bucket=other, Key="dst2")["Body"].read() == b"payload"
    # Onto itself: only with REPLACE.
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "InvalidRequest")
    assert "copy an object to itself without changing the object's metadata" in message
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"c": "3"})
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"c": "3"}


def test_copy_source_conditions(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", CopySourceIfMatch='"nope"')
    assert error_of(excinfo)[:2] == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/missing")
    assert error_of(excinfo)[:2] == (404, "NoSuchKey")


# ---------------------------------------------------------------- reads: ranges, conditions, parts


def test_ranges(s3: Any, bucket: str) -> None:
    body = bytes(range(256)) * 4
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    cases = {"bytes=0-9": (0, 9), "bytes=1000-": (1000, 1023), "bytes=-24": (1000, 1023),
             "bytes=1020-5000": (1020, 1023)}
    for header, (first, last) in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == body[first : last + 1]
        assert got["ContentRange"] == f"bytes {first}-{last}/1024"
        assert got["ContentLength"] == last - first + 1
    head = s3.head_object(Bucket=bucket, Key="r", Range="bytes=0-99")
    assert head["ContentLength"] == 100 and head["ContentRange"] == "bytes 0-99/1024"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=2000-")
    assert error_of(excinfo)[:2] == (416, "InvalidRange")
    assert excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */1024"
    # An unparsable range is ignored, as S3 does.
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=a-b")["Body"].read() == body


def test_conditional_reads(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"cond")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    later, earlier = modified + dt.timedelta(hours=1), modified - dt.timedelta(hours=1)
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"cond"
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=earlier)["Body"].read() == b"cond"
    for kwargs, expected in [
        ({"IfNoneMatch": etag}, (304, "304")),
        ({"IfModifiedSince": later}, (304, "304")),
        ({"IfMatch": '"0000"'}, (412, "PreconditionFailed")),
        ({"IfUnmodifiedSince": earlier}, (412, "PreconditionFailed")),
    ]:
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=bucket, Key="c", **kwargs)
        assert error_of(excinfo)[:2] == expected, kwargs
        with pytest.raises(ClientError) as excinfo:
            s3.head_object(Bucket=bucket, Key="c", **kwargs)
        assert error_of(excinfo)[0] == expected[0], kwargs
    # If-Match wins over a failing If-Unmodified-Since (RFC 7232, as S3).
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=earlier)["ETag"] == etag


def test_conditional_put(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="once", Body=b"2", IfNoneMatch="*")
    assert error_of(excinfo)[:2] == (412, "PreconditionFailed")


def _multipart(s3: Any, bucket: str, key: str, parts: list[bytes], **create: Any) -> dict[str, Any]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    listed = []
    for number, data in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data)["ETag"]
        listed.append({"PartNumber": number, "ETag": etag})
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                        MultipartUpload={"Parts": listed})


def test_part_number_reads(s3: Any, bucket: str) -> None:
    parts = [b"a" * (5 * MiB), b"b" * 100]
    done = _multipart(s3, bucket, "mp", parts)
    assert done["ETag"].endswith('-2"')
    got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert got["Body"].read() == parts[1] and got["PartsCount"] == 2
    assert got["ContentRange"] == f"bytes {5 * MiB}-{5 * MiB + 99}/{5 * MiB + 100}"
    assert s3.head_object(Bucket=bucket, Key="mp", PartNumber=1)["ContentLength"] == 5 * MiB
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert error_of(excinfo)[:2] == (416, "InvalidPartNumber")


# ---------------------------------------------------------------- listings


def _put_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")


def test_list_v2_prefix_delimiter_paging(s3: Any, bucket: str) -> None:
    keys = ["a/1", "a/2", "b/1", "c", "d/x/y", "e"]
    _put_keys(s3, bucket, keys)
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [c["Key"] for c in top["Contents"]] == ["c", "e"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert top["KeyCount"] == 5 and top["IsTruncated"] is False
    under = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [c["Key"] for c in under["Contents"]] == ["a/1", "a/2"] and "CommonPrefixes" not in under
    seen, token = [], None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=2, **kwargs)
        seen += [c["Key"] for c in page.get("Contents", [])]
        assert page["MaxKeys"] == 2
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == keys
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="b/1")
    assert [c["Key"] for c in after["Contents"]] == ["c", "d/x/y", "e"] and after["StartAfter"] == "b/1"
    owned = s3.list_objects_v2(Bucket=bucket, FetchOwner=True, MaxKeys=1)["Contents"][0]
    assert len(owned["Owner"]["ID"]) == 64
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket, MaxKeys=1)["Contents"][0]
    with pytest.raises(ClientError) as excinfo:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="!!!")
    assert error_of(excinfo)[:2] == (400, "InvalidArgument")


def test_list_v1_markers(s3: Any, bucket: str) -> None:
    _put_keys(s3, bucket, ["a/1", "a/2", "b", "c/1", "d"])
    page = s3.list_objects(Bucket=bucket, MaxKeys=2)
    assert [c["Key"] for c in page["Contents"]] == ["a/1", "a/2"] and page["IsTruncated"]
    assert "NextMarker" not in page  # only with a delimiter, as S3
    assert page["Contents"][0]["Owner"]["ID"]
    page = s3.list_objects(Bucket=bucket, Marker="a/2")
    assert [c["Key"] for c in page["Contents"]] == ["b", "c/1", "d"] and page["Marker"] == "a/2"
    delimited = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in delimited["CommonPrefixes"]] == ["a/"]
    assert [c["Key"] for c in delimited["Contents"]] == ["b"]
    assert delimited["NextMarker"] == "b"
    rest = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=delimited["NextMarker"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["c/"] and [c["Key"] for c in rest["Contents"]] == ["d"]


def test_list_utf8_byte_order_and_url_encoding(s3: Any, bucket: str) -> None:
    keys = ["a b", "a+b", "a%b", "zeta", "Ω/x", "é", "\u4e2d", "tab\there", "ctrl\x01char", "emoji\U0001f600"]
    _put_keys(s3, bucket, keys)
    listed = [c["Key"] for c in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())
    v1 = [c["Key"] for c in s3.list_objects(Bucket=bucket)["Contents"]]
    assert v1 == listed
    cps = s3.list_objects_v2(Bucket=bucket, Delimiter="/", Prefix="Ω")["CommonPrefixes"]
    assert cps == [{"Prefix": "Ω/"}]
    # Raw: what goes over the wire with encoding-type=url.
    raw = s3.list_objects_v2(Bucket=bucket, Prefix="a", EncodingType="url")
    assert [c["Key"] for c in raw["Contents"]] == ["a+b", "a%25b", "a%2Bb"]
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["ContentLength"] == 0


def test_list_object_versions_unversioned(s3: Any, bucket: str) -> None:
    _put_keys(s3, bucket, ["k1", "k2", "k3"])
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in page["Versions"]] == [
        ("k1", "null", True), ("k2", "null", True)]
    assert page["IsTruncated"] and page["NextKeyMarker"] == "k2" and page["NextVersionIdMarker"] == "null"
    rest = s3.list_object_versions(Bucket=bucket, KeyMarker="k2", VersionIdMarker="null")
    assert [v["Key"] for v in rest["Versions"]] == ["k3"]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k1", "VersionId": "null"}]})
    assert s3.get_object(Bucket=bucket, Key="k2", VersionId="null")["ContentLength"] == 0
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="k2", VersionId="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd")
    assert error_of(excinfo)[0] == 400


# ---------------------------------------------------------------- multipart


def test_multipart_upload_and_listings(s3: Any, bucket: str) -> None:
    key = "big/object.bin"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-test",
                                        Metadata={"m": "v"})["UploadId"]
    other = s3.create_multipart_upload(Bucket=bucket, Key="other")["UploadId"]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert {(u["Key"], u["UploadId"]) for u in uploads} == {(key, upload), ("other", other)}
    parts = [bytes([i]) * (5 * MiB) for i in range(2)] + [b"tail"]
    listed = []
    for number, data in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data)["ETag"]
        assert etag == f'"{md5_hex(data)}"'
        listed.append({"PartNumber": number, "ETag": etag})
    page = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload, MaxParts=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2] and page["IsTruncated"]
    assert page["NextPartNumberMarker"] == 2
    rest = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload, PartNumberMarker=2)
    assert [(p["PartNumber"], p["Size"]) for p in rest["Parts"]] == [(3, 4)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                        MultipartUpload={"Parts": listed})
    assert done["ETag"].endswith('-3"') and done["Key"] == key and done["Bucket"] == bucket
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"".join(parts)
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"m": "v"}
    s3.abort_multipart_upload(Bucket=bucket, Key="other", UploadId=other)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_upload_part_copy_with_ranges(s3: Any, bucket: str) -> None:
    source = bytes(range(256)) * (24 * 1024)  # 6 MiB
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    first = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1,
                                CopySource={"Bucket": bucket, "Key": "src"},
                                CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]
    second = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=2,
                                 CopySource=f"{bucket}/src", CopySourceRange="bytes=10-19")["CopyPartResult"]
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 2, "ETag": second["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == source[: 5 * MiB] + source[10:20]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId="nope", PartNumber=1,
                            CopySource=f"{bucket}/src")
    assert error_of(excinfo)[:2] == (404, "NoSuchUpload")


def test_multipart_errors(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    small = [s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=n, Body=b"x" * 10)["ETag"]
             for n in (1, 2)]
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": small[0]}, {"PartNumber": 2, "ETag": small[1]}]})
    assert error_of(excinfo)[:2] == (400, "EntityTooSmall")
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]})
    assert error_of(excinfo)[:2] == (400, "InvalidPart")
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": 2, "ETag": small[1]}, {"PartNumber": 1, "ETag": small[0]}]})
    assert error_of(excinfo)[:2] == (400, "InvalidPartOrder")
    for call in (
        lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId="bogus", PartNumber=1, Body=b"x"),
        lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId="bogus"),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId="bogus"),
        lambda: s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId="bogus",
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": small[0]}]}),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo)[:2] == (404, "NoSuchUpload")
    # A single small part is a valid object (only non-final parts have a minimum).
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": small[0]}]})
    assert done["ETag"].endswith('-1"')


# ---------------------------------------------------------------- integrity


def test_content_md5(s3: Any, bucket: str) -> None:
    body = b"integrity matters"
    s3.put_object(Bucket=bucket, Key="ok", Body=body, ContentMD5=md5_b64(body))
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ContentMD5=md5_b64(b"something else"))
    assert error_of(excinfo)[:2] == (400, "BadDigest")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ContentMD5="not-base64!")
    assert error_of(excinfo)[:2] == (400, "InvalidDigest")
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="bad")
    assert error_of(excinfo)[0] == 404


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA1", "SHA256"])
def test_checksums_checked_and_returned(s3: Any, bucket: str, algorithm: str) -> None:
    body = b"checksummed body " * 1000
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm=algorithm)
    member = f"Checksum{algorithm}"
    assert put[member]
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got[member] == put[member] and got["Body"].read() == body
    assert s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")[member] == put[member]
    # Not returned unless asked for.
    plain = s3.head_object(Bucket=bucket, Key="k")
    assert member not in plain


def test_crc32c_checked(s3: Any, bucket: str) -> None:
    """botocore needs awscrt to compute CRC32C itself, so the value is given precomputed."""
    from sagestack.storage.checksums import encode, new_hasher

    body = b"123456789"
    hasher = new_hasher("CRC32C")
    hasher.update(body)
    value = encode(hasher.digest())
    assert value == "4waSgw=="  # the CRC32C check value 0xe3069283
    assert s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumCRC32C=value)["ChecksumCRC32C"] == value
    assert s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")["ChecksumCRC32C"] == value
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="k2", Body=b"other", ChecksumCRC32C=value)
    assert error_of(excinfo)[:2] == (400, "BadDigest")


def test_wrong_checksum_refused(s3: Any, bucket: str) -> None:
    body = b"some bytes"
    s3.put_object(Bucket=bucket, Key="ok", Body=body, ChecksumCRC32=_crc32_b64(body))
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ChecksumCRC32=_crc32_b64(b"other"))
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "BadDigest") and "CRC32" in message
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ChecksumCRC32="!!")
    assert error_of(excinfo)[:2] == (400, "InvalidRequest")


def test_multipart_checksums(s3: Any, bucket: str) -> None:
    parts = [b"p" * (5 * MiB), b"q" * 1000]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32",
                                        ChecksumType="FULL_OBJECT")["UploadId"]
    listed = []
    for number, data in enumerate(parts, start=1):
        part = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=number, Body=data,
                              ChecksumAlgorithm="CRC32")
        listed.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                        MultipartUpload={"Parts": listed})
    assert done["ChecksumCRC32"] == _crc32_b64(b"".join(parts)) and done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)  # botocore validates the CRC32 while reading


# ---------------------------------------------------------------- ACLs, tagging


def test_acls_private_only(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="private")
    s3.put_object(Bucket=bucket, Key="k2", Body=b"x", ACL="bucket-owner-full-control")
    acl = s3.get_object_acl(Bucket=bucket, Key="k")
    assert acl["Grants"] == [{"Grantee": {**acl["Owner"], "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"}]
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="private")
    s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy={"Owner": acl["Owner"], "Grants": acl["Grants"]})
    bucket_acl = s3.get_bucket_acl(Bucket=bucket)
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    for call in (
        lambda: s3.put_object(Bucket=bucket, Key="pub", Body=b"x", ACL="public-read"),
        lambda: s3.put_object_acl(Bucket=bucket, Key="k", ACL="public-read"),
        lambda: s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write"),
        lambda: s3.put_bucket_acl(Bucket=bucket, GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"'),
        lambda: s3.create_bucket(Bucket=unique_bucket(), ACL="public-read"),
        lambda: s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy={
            "Owner": bucket_acl["Owner"],
            "Grants": [{"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                        "Permission": "READ"}]}),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        status, code, message = error_of(excinfo)
        assert (status, code) == (403, "AccessDenied") and "public" in message
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="pub")
    assert error_of(excinfo)[0] == 404


def test_tagging(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_tagging(Bucket=bucket)
    assert error_of(excinfo)[:2] == (404, "NoSuchTagSet")
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "team", "Value": "ml"}]})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "team", "Value": "ml"}]
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&b=two%20words")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [
        {"Key": "a", "Value": "1"}, {"Key": "b", "Value": "two words"}]
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "c", "Value": "3"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "c", "Value": "3"}]
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/k")
    assert s3.get_object_tagging(Bucket=bucket, Key="copy")["TagSet"] == [{"Key": "c", "Value": "3"}]
    s3.put_object(Bucket=bucket, Key="k", Body=b"overwritten")  # a new object has no tags
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError):
        s3.get_bucket_tagging(Bucket=bucket)
