"""External mode: a second server keeps its buckets and objects in the first one, over S3."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.s3_support import error_of, file_md5, unique_bucket, write_random_file

MiB = 1024 * 1024


@pytest.fixture
def front(server: ServerProcess, tmp_path: Path) -> Iterator[ServerProcess]:
    """Server B, storing into the shared server A with A's admin credentials."""
    proc = ServerProcess(tmp_path / "front", extra_args=[
        "--s3-endpoint", server.url,
        "--s3-access-key", server.env["AWS_ACCESS_KEY_ID"],
        "--s3-secret-key", server.env["AWS_SECRET_ACCESS_KEY"],
    ]).start()
    yield proc
    proc.stop()


def test_objects_written_through_b_appear_in_a(server: ServerProcess, front: ServerProcess,
                                                 tmp_path: Path) -> None:
    a, b = server.client("s3"), front.client("s3")
    bucket = unique_bucket("ext")
    b.create_bucket(Bucket=bucket)
    assert bucket in [x["Name"] for x in a.list_buckets()["Buckets"]]
    b.head_bucket(Bucket=bucket)

    body = b"written through B"
    put = b.put_object(Bucket=bucket, Key="dir/small.txt", Body=body, ContentType="text/plain",
                       Metadata={"origin": "b"})
    got = a.get_object(Bucket=bucket, Key="dir/small.txt")
    assert got["Body"].read() == body and got["ETag"] == put["ETag"]
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"origin": "b"}

    source, target = tmp_path / "src.bin", tmp_path / "dst.bin"
    write_random_file(source, 12 * MiB, seed=5)
    b.upload_file(str(source), bucket, "dir/big.bin")  # multipart through B
    assert a.head_object(Bucket=bucket, Key="dir/big.bin")["ETag"].endswith('-2"')
    a.download_file(bucket, "dir/big.bin", str(target))
    assert file_md5(target) == file_md5(source)
    b.download_file(bucket, "dir/big.bin", str(target))
    assert file_md5(target) == file_md5(source)

    ranged = b.get_object(Bucket=bucket, Key="dir/small.txt", Range="bytes=0-6")
    assert ranged["Body"].read() == body[:7] and ranged["ContentRange"] == f"bytes 0-6/{len(body)}"
    listed = b.list_objects_v2(Bucket=bucket, Delimiter="/", Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/big.bin", "dir/small.txt"]
    b.copy_object(Bucket=bucket, Key="copy.txt", CopySource=f"{bucket}/dir/small.txt")
    assert a.get_object(Bucket=bucket, Key="copy.txt")["Body"].read() == body

    # Written to A, read through B.
    a.put_object(Bucket=bucket, Key="from-a", Body=b"A" * 1000)
    assert hashlib.md5(b.get_object(Bucket=bucket, Key="from-a")["Body"].read()).hexdigest() == \
        hashlib.md5(b"A" * 1000).hexdigest()

    # Errors keep their S3 codes through both hops.
    with pytest.raises(ClientError) as excinfo:
        b.get_object(Bucket=bucket, Key="missing")
    assert error_of(excinfo)[:2] == (404, "NoSuchKey")
    with pytest.raises(ClientError) as excinfo:
        b.head_object(Bucket=bucket, Key="missing")
    assert error_of(excinfo)[0] == 404
    with pytest.raises(ClientError) as excinfo:
        b.delete_bucket(Bucket=bucket)
    assert error_of(excinfo)[:2] == (409, "BucketNotEmpty")
    with pytest.raises(ClientError) as excinfo:
        b.put_object(Bucket=bucket, Key="bad", Body=b"x", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert error_of(excinfo)[:2] == (400, "BadDigest")

    b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in
                                                         ("dir/small.txt", "dir/big.bin", "copy.txt", "from-a")]})
    assert a.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    b.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as excinfo:
        a.head_bucket(Bucket=bucket)
    assert error_of(excinfo)[0] == 404


def test_external_multipart_api(server: ServerProcess, front: ServerProcess) -> None:
    a, b = server.client("s3"), front.client("s3")
    bucket = unique_bucket("extmp")
    b.create_bucket(Bucket=bucket)
    upload = b.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    assert [u["UploadId"] for u in a.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    parts: list[dict[str, Any]] = []
    for number, data in enumerate([b"1" * (5 * MiB), b"2" * 10], start=1):
        part = b.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=number, Body=data,
                             ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]})
    assert [p["PartNumber"] for p in b.list_parts(Bucket=bucket, Key="k", UploadId=upload)["Parts"]] == [1, 2]
    b.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": parts})
    assert a.head_object(Bucket=bucket, Key="k")["ContentLength"] == 5 * MiB + 10
    with pytest.raises(ClientError) as excinfo:
        b.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)
    assert error_of(excinfo)[:2] == (404, "NoSuchUpload")
