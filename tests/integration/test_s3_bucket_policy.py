"""S3 bucket policies over a real server: boto3, the AWS CLI, a restart, and the external store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.s3_support import error_of, unique_bucket


def _policy(bucket: str, **statement: Any) -> str:
    base: dict[str, Any] = {"Sid": "Read", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{bucket}/*"}
    base.update(statement)
    return json.dumps({"Version": "2012-10-17", "Statement": [{k: v for k, v in base.items() if v is not None}]})


@pytest.fixture
def s3(server: ServerProcess) -> Any:
    return server.client("s3")


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = unique_bucket("pol")
    s3.create_bucket(Bucket=name)
    yield name
    s3.delete_bucket(Bucket=name)


def test_round_trip(s3: Any, bucket: str) -> None:
    document = _policy(bucket)
    put = s3.put_bucket_policy(Bucket=bucket, Policy=document, ConfirmRemoveSelfBucketAccess=True)
    assert put["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    assert s3.get_bucket_policy(Bucket=bucket)["Policy"] == document  # exactly as sent
    assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"] == {"IsPublic": True}

    replaced = _policy(bucket, Principal={"AWS": "arn:aws:iam::123456789012:root"})
    s3.put_bucket_policy(Bucket=bucket, Policy=replaced)
    assert s3.get_bucket_policy(Bucket=bucket)["Policy"] == replaced
    assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"] == {"IsPublic": False}

    deleted = s3.delete_bucket_policy(Bucket=bucket)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_bucket_policy(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204  # none: still 204
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_policy(Bucket=bucket)
    assert error_of(excinfo) == (404, "NoSuchBucketPolicy", "The bucket policy does not exist")
    assert excinfo.value.response["Error"]["BucketName"] == bucket
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_policy_status(Bucket=bucket)
    assert error_of(excinfo)[:2] == (404, "NoSuchBucketPolicy")


def test_policy_status_not_public_with_restricting_conditions(s3: Any, bucket: str) -> None:
    for condition in ({"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}},
                      {"StringEquals": {"aws:SourceVpc": "vpc-91237329"}},
                      {"StringEquals": {"aws:PrincipalOrgID": "o-abc123def4"}}):
        s3.put_bucket_policy(Bucket=bucket, Policy=_policy(bucket, Condition=condition))
        assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False, condition
    for condition in ({"IpAddress": {"aws:SourceIp": "0.0.0.0/1"}},
                      {"StringLike": {"aws:SourceVpc": "vpc-*"}},
                      {"Bool": {"aws:SecureTransport": "true"}}):
        s3.put_bucket_policy(Bucket=bucket, Policy=_policy(bucket, Condition=condition))
        assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True, condition
    s3.delete_bucket_policy(Bucket=bucket)


def test_missing_bucket(s3: Any) -> None:
    name = unique_bucket("nobucket")
    calls = [lambda: s3.put_bucket_policy(Bucket=name, Policy=_policy(name)),
             lambda: s3.get_bucket_policy(Bucket=name),
             lambda: s3.delete_bucket_policy(Bucket=name),
             lambda: s3.get_bucket_policy_status(Bucket=name)]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == (404, "NoSuchBucket", "The specified bucket does not exist")


def test_a_deleted_buckets_policy_goes_with_it(s3: Any) -> None:
    name = unique_bucket("gone")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name))
    s3.delete_bucket(Bucket=name)
    s3.create_bucket(Bucket=name)
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_policy(Bucket=name)
    assert error_of(excinfo)[:2] == (404, "NoSuchBucketPolicy")
    s3.delete_bucket(Bucket=name)


def test_expected_bucket_owner(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_policy(Bucket=bucket, ExpectedBucketOwner="999999999999")
    assert error_of(excinfo)[:2] == (403, "AccessDenied")


@pytest.mark.parametrize(("make", "message"), [
    (lambda b: "Version: 2012-10-17", "Policies must be valid JSON and the first byte must be '{'"),
    (lambda b: '{"Version": "2012-10-17", "Statement": [}', "This policy contains invalid Json"),
    (lambda b: _policy(b, Principal=None), "Missing required field Principal"),
    (lambda b: _policy(b, Action="s3:ListObjects"), "Policy has invalid action"),
    (lambda b: _policy(b, Action="sagemaker:CreateTrainingJob"), "Policy has invalid action"),
    (lambda b: _policy(b, Resource="arn:aws:s3:::some-other-bucket/*"), "Policy has invalid resource"),
    (lambda b: _policy(b, Condition={"StringSortOf": {"aws:SourceVpc": "vpc-1"}}),
     "Invalid Condition type : StringSortOf"),
    (lambda b: _policy(b, Action="s3:ListBucket"), "Action does not apply to any resource(s) in statement"),
    (lambda b: _policy(b, Resource=[f"arn:aws:s3:::{b}/p{i:05d}/*" for i in range(800)]),
     "Policy exceeds the maximum allowed document size."),
])
def test_malformed_policies(s3: Any, bucket: str, make: Any, message: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_policy(Bucket=bucket, Policy=make(bucket))
    assert error_of(excinfo) == (400, "MalformedPolicy", message)
    with pytest.raises(ClientError) as excinfo:  # nothing was stored
        s3.get_bucket_policy(Bucket=bucket)
    assert error_of(excinfo)[:2] == (404, "NoSuchBucketPolicy")


def _aws(server: ServerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "awscli", *args], env=server.subprocess_env(),
                          capture_output=True, text=True, timeout=120, check=check)


def test_aws_cli(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    document = _policy(bucket, Principal={"AWS": "arn:aws:iam::123456789012:root"})
    (tmp_path / "policy.json").write_text(document)
    _aws(server, "s3api", "put-bucket-policy", "--bucket", bucket, "--policy", f"file://{tmp_path / 'policy.json'}")
    got = json.loads(_aws(server, "s3api", "get-bucket-policy", "--bucket", bucket).stdout)
    assert got == {"Policy": document}
    status = json.loads(_aws(server, "s3api", "get-bucket-policy-status", "--bucket", bucket).stdout)
    assert status == {"PolicyStatus": {"IsPublic": False}}
    failed = _aws(server, "s3api", "put-bucket-policy", "--bucket", bucket, "--policy", "nope", check=False)
    assert failed.returncode != 0
    assert "(MalformedPolicy)" in failed.stderr and "the first byte must be '{'" in failed.stderr
    s3.delete_bucket_policy(Bucket=bucket)


def test_policy_survives_a_restart(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    s3 = fresh_server.client("s3")
    name = unique_bucket("durable")
    s3.create_bucket(Bucket=name)
    document = _policy(name)
    s3.put_bucket_policy(Bucket=name, Policy=document)
    fresh_server.kill()  # SIGKILL: no clean shutdown
    fresh_server.start()
    s3 = fresh_server.client("s3")
    assert s3.get_bucket_policy(Bucket=name)["Policy"] == document
    assert s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"] is True


def test_external_store_keeps_policies_locally(server: ServerProcess, tmp_path: Path) -> None:
    front = ServerProcess(tmp_path / "front", extra_args=[
        "--s3-endpoint", server.url,
        "--s3-access-key", server.env["AWS_ACCESS_KEY_ID"],
        "--s3-secret-key", server.env["AWS_SECRET_ACCESS_KEY"],
    ]).start()
    try:
        a, b = server.client("s3"), front.client("s3")
        name = unique_bucket("extpol")
        b.create_bucket(Bucket=name)
        document = _policy(name)
        b.put_bucket_policy(Bucket=name, Policy=document)
        assert b.get_bucket_policy(Bucket=name)["Policy"] == document
        assert b.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"] is True
        with pytest.raises(ClientError) as excinfo:  # kept by B, not forwarded to A
            a.get_bucket_policy(Bucket=name)
        assert error_of(excinfo)[:2] == (404, "NoSuchBucketPolicy")
        with pytest.raises(ClientError) as excinfo:
            b.put_bucket_policy(Bucket=name, Policy=_policy(name, Action="s3:Bogus"))
        assert error_of(excinfo) == (400, "MalformedPolicy", "Policy has invalid action")
        with pytest.raises(ClientError) as excinfo:
            b.get_bucket_policy(Bucket=unique_bucket("missing"))
        assert error_of(excinfo)[:2] == (404, "NoSuchBucket")

        front.kill()
        front.start()
        b = front.client("s3")
        assert b.get_bucket_policy(Bucket=name)["Policy"] == document  # survives a restart
        b.delete_bucket(Bucket=name)  # and goes with the bucket
        b.create_bucket(Bucket=name)
        with pytest.raises(ClientError) as excinfo:
            b.get_bucket_policy(Bucket=name)
        assert error_of(excinfo)[:2] == (404, "NoSuchBucketPolicy")
        b.delete_bucket(Bucket=name)
    finally:
        front.stop()
