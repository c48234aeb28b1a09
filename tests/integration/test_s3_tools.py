"""S3 as real tools use it: boto3 transfers and resources, presigned URLs, the AWS CLI, pandas via s3fs,
virtual-host addressing, and HTTPS (where boto3 sends aws-chunked bodies with trailing checksums)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.s3_support import error_of, file_md5, md5_hex, unique_bucket, write_random_file

MiB = 1024 * 1024


@pytest.fixture
def s3(server: ServerProcess) -> Any:
    return server.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    return name


# ---------------------------------------------------------------- boto3 transfers and resources


def test_upload_download_100_mib(s3: Any, bucket: str, tmp_path: Path) -> None:
    source, target = tmp_path / "src.bin", tmp_path / "dst.bin"
    write_random_file(source, 100 * MiB, seed=1)
    s3.upload_file(str(source), bucket, "big/file.bin")  # multipart: 8 MiB parts, 10 threads
    head = s3.head_object(Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == 100 * MiB and head["ETag"].endswith('-13"')
    s3.download_file(bucket, "big/file.bin", str(target))  # parallel ranged GETs
    assert file_md5(target) == file_md5(source)


def test_transfer_single_part_and_small_parts(s3: Any, bucket: str, tmp_path: Path) -> None:
    source, target = tmp_path / "src.bin", tmp_path / "dst.bin"
    write_random_file(source, 12 * MiB + 3, seed=2)
    s3.upload_file(str(source), bucket, "single", Config=TransferConfig(multipart_threshold=64 * MiB))
    assert "-" not in s3.head_object(Bucket=bucket, Key="single")["ETag"]
    s3.upload_file(str(source), bucket, "parts", Config=TransferConfig(multipart_chunksize=5 * MiB,
                                                                        multipart_threshold=5 * MiB))
    assert s3.head_object(Bucket=bucket, Key="parts")["ETag"].endswith('-3"')
    s3.download_file(bucket, "parts", str(target), Config=TransferConfig(multipart_chunksize=5 * MiB))
    assert file_md5(target) == file_md5(source)


def test_resource_api(server: ServerProcess, tmp_path: Path) -> None:
    import boto3

    resource = boto3.resource(
        "s3", endpoint_url=server.url, aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"], region_name=server.env["AWS_DEFAULT_REGION"],
    )
    bucket = resource.Bucket(unique_bucket())
    bucket.create()
    bucket.wait_until_exists()
    for i in range(1205):  # more than one listing page
        if i % 200 == 0 or i > 1195:
            bucket.put_object(Key=f"k/{i:05d}", Body=str(i).encode())
    bucket.upload_fileobj(io.BytesIO(b"via fileobj"), "fileobj")
    assert resource.Object(bucket.name, "fileobj").get()["Body"].read() == b"via fileobj"
    keys = [o.key for o in bucket.objects.filter(Prefix="k/")]
    assert keys == sorted(keys) and len(keys) == 15
    assert resource.Object(bucket.name, "k/00200").content_length == 3
    bucket.objects.all().delete()
    assert list(bucket.objects.all()) == []
    bucket.delete()
    bucket.wait_until_not_exists()


def test_many_keys_pagination_and_batch_delete(s3: Any, bucket: str) -> None:
    keys = [f"p/{i:04d}" for i in range(1100)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    paginator = s3.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket=bucket, Prefix="p/"))
    assert len(pages) == 2 and [o["Key"] for p in pages for o in p["Contents"]] == keys
    v1 = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket=bucket) for o in p["Contents"]]
    assert v1 == keys
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---------------------------------------------------------------- presigned URLs


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """A bare request: no Content-Type added (a SigV2 presigned URL signs it)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, f"{parts.path}?{parts.query}", body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("signature", ["s3v4", "s3"])  # "s3" (SigV2) is boto3's default for presigning
def test_presigned_urls_until_they_expire(server: ServerProcess, bucket: str, signature: str) -> None:
    presigner = server.client("s3", config=Config(signature_version=signature))
    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=2)
    get_url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=2)
    assert ("X-Amz-Signature" in get_url) == (signature == "s3v4")
    assert _http("PUT", put_url, b"presigned body") == (200, b"")
    assert _http("GET", get_url) == (200, b"presigned body")
    time.sleep(3.1)
    for method, url, data in (("GET", get_url, None), ("PUT", put_url, b"late")):
        status, body = _http(method, url, data)
        assert status == 403
        assert b"<Code>AccessDenied</Code>" in body and b"expired" in body
    assert server.client("s3").get_object(Bucket=bucket, Key="pre")["Body"].read() == b"presigned body"


# ---------------------------------------------------------------- AWS CLI


def _aws(server: ServerProcess, *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "awscli", *args], env=server.subprocess_env(), cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_aws_cli(server: ServerProcess, tmp_path: Path) -> None:
    name = unique_bucket("cli")
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("alpha")
    (local / "sub" / "b.txt").write_text("beta")
    write_random_file(local / "sub" / "big.bin", 9 * MiB, seed=3)  # multipart in the CLI
    _aws(server, "s3", "mb", f"s3://{name}")
    _aws(server, "s3", "cp", str(local / "a.txt"), f"s3://{name}/single/a.txt")
    _aws(server, "s3", "sync", str(local), f"s3://{name}/tree")
    listing = _aws(server, "s3", "ls", "--recursive", f"s3://{name}")
    for key in ("single/a.txt", "tree/a.txt", "tree/sub/b.txt", "tree/sub/big.bin"):
        assert key in listing
    out = tmp_path / "back"
    _aws(server, "s3", "sync", f"s3://{name}/tree", str(out))
    assert (out / "sub" / "b.txt").read_text() == "beta"
    assert file_md5(out / "sub" / "big.bin") == file_md5(local / "sub" / "big.bin")
    head = json.loads(_aws(server, "s3api", "head-object", "--bucket", name, "--key", "tree/a.txt"))
    assert head["ContentLength"] == 5
    _aws(server, "s3api", "put-object", "--bucket", name, "--key", "api.txt", "--body", str(local / "a.txt"))
    listed = json.loads(_aws(server, "s3api", "list-objects-v2", "--bucket", name, "--prefix", "api"))
    assert [o["Key"] for o in listed["Contents"]] == ["api.txt"]
    _aws(server, "s3", "rm", "--recursive", f"s3://{name}")
    assert _aws(server, "s3", "ls", f"s3://{name}").strip() == ""
    _aws(server, "s3", "rb", f"s3://{name}")
    with pytest.raises(ClientError) as excinfo:
        server.client("s3").head_bucket(Bucket=name)
    assert error_of(excinfo)[0] == 404


# ---------------------------------------------------------------- pandas through s3fs


def test_pandas_read_csv_through_s3fs(server: ServerProcess, s3: Any, bucket: str) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("s3fs")
    s3.put_object(Bucket=bucket, Key="data/table.csv", Body=b"a,b\n1,x\n2,y\n3,z\n")
    options = {
        "key": server.env["AWS_ACCESS_KEY_ID"],
        "secret": server.env["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": server.url, "region_name": server.env["AWS_DEFAULT_REGION"]},
    }
    frame = pd.read_csv(f"s3://{bucket}/data/table.csv", storage_options=options)
    assert list(frame.columns) == ["a", "b"] and frame["a"].sum() == 6
    frame.assign(c=frame["a"] * 2).to_csv(f"s3://{bucket}/data/out.csv", index=False, storage_options=options)
    assert s3.get_object(Bucket=bucket, Key="data/out.csv")["Body"].read().decode().splitlines()[0] == "a,b,c"


# ---------------------------------------------------------------- virtual-host addressing


def test_virtual_host_addressing(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        # <bucket>.localhost is not in this machine's resolver; browsers and systemd resolve it to loopback.
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port = server.url.rsplit(":", 1)[1]
    client = server.client("s3", endpoint_url=f"http://localhost:{port}",
                           config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}))
    name = unique_bucket("vh")
    client.create_bucket(Bucket=name)
    put = client.put_object(Bucket=name, Key="dir/key with space", Body=b"virtual")
    assert put["ResponseMetadata"]["HTTPHeaders"]  # went to <bucket>.localhost
    assert client.get_object(Bucket=name, Key="dir/key with space")["Body"].read() == b"virtual"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]] == ["dir/key with space"]
    url = client.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "dir/key with space"})
    assert url.startswith(f"http://{name}.localhost:")
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"virtual"
    # The same object through path-style addressing.
    assert server.client("s3").get_object(Bucket=name, Key="dir/key with space")["Body"].read() == b"virtual"


# ---------------------------------------------------------------- HTTPS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("tls") / "data", tls=True).start()
    yield proc
    proc.stop()


def test_https_transfers_use_trailing_checksums(tls_server: ServerProcess, tmp_path: Path) -> None:
    s3 = tls_server.client("s3")
    try:
        _https_transfers(s3, tmp_path)
    finally:
        # An idle keep-alive TLS connection would hold the server's graceful stop until
        # asyncio's SSL shutdown timeout (30 s): close ours first.
        s3.close()


def _https_transfers(s3: Any, tmp_path: Path) -> None:
    name = unique_bucket("tls")
    s3.create_bucket(Bucket=name)
    events: list[dict[str, str]] = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: events.append(dict(request.headers)))
    body = b"over tls " * 1000
    put = s3.put_object(Bucket=name, Key="small", Body=body)
    sent = {k.lower(): v for k, v in events[-1].items()}
    assert "aws-chunked" in str(sent.get("content-encoding", b"")) and "x-amz-trailer" in sent
    assert put["ChecksumCRC32"]
    got = s3.get_object(Bucket=name, Key="small")
    assert got["Body"].read() == body and got["ETag"] == f'"{md5_hex(body)}"'
    assert "ContentEncoding" not in got  # aws-chunked was transport only
    source, target = tmp_path / "src.bin", tmp_path / "dst.bin"
    write_random_file(source, 20 * MiB, seed=4)
    s3.upload_file(str(source), name, "big")
    s3.download_file(name, "big", str(target))
    assert file_md5(target) == file_md5(source)
    # A wrong trailing checksum is refused.
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=name, Key="bad", Body=b"abc", ChecksumCRC32="AAAAAA==")
    assert error_of(excinfo)[:2] == (400, "BadDigest")
