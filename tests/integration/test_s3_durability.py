"""Crash safety of S3 uploads: clients that die mid-body, short bodies, and a server killed with SIGKILL."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import threading
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

import botocore.auth
import psutil
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError

from sagestack.testing.server_process import ServerProcess
from tests.integration.s3_support import error_of, unique_bucket

MiB = 1024 * 1024


def _tmp_files(proc: ServerProcess) -> list[Path]:
    return list((proc.data_dir / "objects" / "tmp").iterdir())


def _wait_no_tmp_files(proc: ServerProcess, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _tmp_files(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _tmp_files(proc), "an aborted upload left its temp file behind"


def _half_upload(url: str, size: int, close: bool = True) -> socket.socket:
    """PUT to a presigned URL announcing ``size`` bytes, send half of them, then hang up (or hang)."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = (f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    sock.sendall(head + b"z" * (size // 2))
    if close:
        sock.close()
    return sock


def test_client_killed_mid_put_leaves_nothing(server: ServerProcess) -> None:
    s3 = server.client("s3")
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="existing", Body=b"old contents")
    for key in ("new", "existing"):
        url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key})
        _half_upload(url, 8 * MiB)
    time.sleep(0.3)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="new")
    assert error_of(excinfo)[0] == 404
    # A replaced object is untouched by a failed overwrite.
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == b"old contents"
    _wait_no_tmp_files(server)


def test_client_killed_mid_part_leaves_no_part(server: ServerProcess) -> None:
    s3 = server.client("s3")
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"a" * (5 * MiB))
    url = s3.generate_presigned_url("upload_part", Params={"Bucket": bucket, "Key": "mp", "UploadId": upload,
                                                           "PartNumber": 2})
    _half_upload(url, 6 * MiB)
    time.sleep(0.3)
    parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 2, "ETag": first["ETag"]}]})
    assert error_of(excinfo)[:2] == (400, "InvalidPart")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="mp")
    _wait_no_tmp_files(server)


class _TrailerAuth(botocore.auth.S3SigV4Auth):
    """Signs the way botocore does for aws-chunked bodies with a trailing checksum."""

    def payload(self, request: Any) -> str:
        return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def _chunked_put(server: ServerProcess, bucket: str, key: str, data: bytes, declared: int) -> tuple[int, bytes]:
    """An aws-chunked PUT whose x-amz-decoded-content-length says ``declared`` bytes."""
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = (f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
            + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode())
    url = f"{server.url}/{bucket}/{key}"
    request = AWSRequest("PUT", url, data=body, headers={
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(declared),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-sdk-checksum-algorithm": "CRC32",
        "Content-Length": str(len(body)),
    })
    creds = Credentials(server.env["AWS_ACCESS_KEY_ID"], server.env["AWS_SECRET_ACCESS_KEY"])
    _TrailerAuth(creds, "s3", server.env["AWS_DEFAULT_REGION"]).add_auth(request)
    prepared = request.prepare()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("PUT", parts.path, body=body, headers=dict(prepared.headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_short_aws_chunked_body_is_incomplete(server: ServerProcess) -> None:
    s3 = server.client("s3")
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    assert _chunked_put(server, bucket, "ok", b"x" * 100, 100)[0] == 200
    assert s3.get_object(Bucket=bucket, Key="ok", ChecksumMode="ENABLED")["Body"].read() == b"x" * 100
    status, body = _chunked_put(server, bucket, "short", b"x" * 100, 150)
    assert status == 400 and b"<Code>IncompleteBody</Code>" in body
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="short")


def test_sigkill_during_concurrent_uploads(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    s3 = fresh_server.client("s3")
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    # Unfinished work at the moment of the kill: stalled bodies, and a multipart upload never completed.
    stalled = [
        _half_upload(s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": f"stalled-{i}"}),
                     4 * MiB, close=False)
        for i in range(3)
    ]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="never-completed")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="never-completed", UploadId=upload, PartNumber=1, Body=b"p" * (5 * MiB))

    completed: dict[str, str] = {}
    intended: dict[str, str] = {}
    stop = threading.Event()

    def writer(worker: int) -> None:
        client = fresh_server.client("s3")
        n = 0
        while not stop.is_set():
            key = f"obj-{worker}-{n}"
            body = hashlib.sha256(key.encode()).digest() * (1024 * (1 + n % 64))  # 32 KiB .. 2 MiB
            intended[key] = hashlib.md5(body).hexdigest()
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body)
            except (ClientError, ConnectionError, EndpointConnectionError, OSError):
                return
            completed[key] = intended[key]
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(completed) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    fresh_server.kill()  # SIGKILL, mid-flight
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    for sock in stalled:
        sock.close()
    assert len(completed) >= 40

    fresh_server.start()
    assert not _tmp_files(fresh_server), "recovery leaves no temp files"
    s3 = fresh_server.client("s3")
    present = {o["Key"]: o for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in p.get("Contents", [])}
    missing = set(completed) - set(present)
    assert not missing, f"acknowledged uploads lost: {sorted(missing)[:5]}"
    for key, info in present.items():
        # Acknowledged or not, whatever is visible is exactly what its client sent.
        assert key in intended, f"unexpected object {key}"
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.md5(data).hexdigest() == intended[key] == info["ETag"].strip('"'), key
    assert not any(k.startswith("stalled-") or k == "never-completed" for k in present)
    # The unfinished multipart upload survives as an upload (as in S3) and can still be aborted.
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [upload]
    s3.abort_multipart_upload(Bucket=bucket, Key="never-completed", UploadId=upload)


def test_abandoned_download_stops_reading(server: ServerProcess) -> None:
    """A client that hangs up mid-GET must not leave the server reading the object to the end."""
    s3 = server.client("s3")
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="big", Body=b"\0" * (96 * MiB))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big"})
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    before = proc.io_counters().read_chars
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    received = 0
    while received < 2 * MiB:
        received += len(sock.recv(1 << 16))
    sock.close()
    time.sleep(1.0)
    read = proc.io_counters().read_chars - before
    assert read < 48 * MiB, f"server read {read / MiB:.0f} MiB of a 96 MiB object nobody wanted"
