"""The foundation over real sockets: identity, SigV4 failures, validation, durability, TLS."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from unittest import mock

import botocore.auth
import psutil
import pytest
from botocore import UNSIGNED
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    err = excinfo.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"].get("Message", "")


def test_health(server: ServerProcess) -> None:
    with urllib.request.urlopen(server.url + "/_sagestack/health") as response:
        assert response.status == 200
        assert json.load(response)["status"] == "ok"


def test_get_caller_identity_boto3(server: ServerProcess) -> None:
    identity = server.client("sts").get_caller_identity()
    assert identity["Account"].isdigit() and len(identity["Account"]) == 12
    assert identity["Arn"] == f"arn:aws:iam::{identity['Account']}:user/admin"
    assert identity["UserId"].startswith("AIDA")
    assert identity["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_get_caller_identity_aws_cli(server: ServerProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "awscli", "sts", "get-caller-identity", "--output", "json"],
        env=server.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    identity = json.loads(out.stdout)
    assert identity["Arn"].endswith(":user/admin")


def test_credentials_file_is_private(server: ServerProcess) -> None:
    mode = (server.data_dir / "credentials").stat().st_mode & 0o777
    assert mode == 0o600
    log = server.log_path.read_text()
    assert server.env["AWS_SECRET_ACCESS_KEY"] not in log


# ---------------------------------------------------------------- authentication failures

# One operation per protocol family: json (sagemaker), query (sts), rest-xml (s3).
FAMILIES = {
    "json": ("sagemaker", "list_training_jobs", {}),
    "query": ("sts", "get_caller_identity", {}),
    "rest-xml": ("s3", "list_buckets", {}),
}

EXPECTED = {
    # family: (wrong secret, unknown key, no auth, skewed)
    "json": (
        "InvalidSignatureException",
        "UnrecognizedClientException",
        "MissingAuthenticationTokenException",
        "InvalidSignatureException",
    ),
    "query": (
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
    ),
    "rest-xml": ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "RequestTimeTooSkewed"),
}


def _call(client: Any, method: str, params: dict[str, Any]) -> None:
    getattr(client, method)(**params)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_wrong_secret_refused(server: ServerProcess, family: str) -> None:
    service, method, params = FAMILIES[family]
    client = server.client(service, aws_secret_access_key="x" * 40)
    with pytest.raises(ClientError) as excinfo:
        _call(client, method, params)
    status, code, _ = _error(excinfo)
    assert (status, code) == (403, EXPECTED[family][0])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unknown_key_refused(server: ServerProcess, family: str) -> None:
    service, method, params = FAMILIES[family]
    client = server.client(service, aws_access_key_id="AKIAUNKNOWNUNKNOWN00")
    with pytest.raises(ClientError) as excinfo:
        _call(client, method, params)
    status, code, _ = _error(excinfo)
    assert (status, code) == (403, EXPECTED[family][1])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_auth_refused(server: ServerProcess, family: str) -> None:
    service, method, params = FAMILIES[family]
    client = server.client(service, config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as excinfo:
        _call(client, method, params)
    status, code, _ = _error(excinfo)
    assert (status, code) == (403, EXPECTED[family][2])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_request_signed_20_minutes_ago_refused(server: ServerProcess, family: str) -> None:
    service, method, params = FAMILIES[family]
    client = server.client(service)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)).replace(tzinfo=None)
    with (
        mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: past),
        pytest.raises(ClientError) as excinfo,
    ):
        _call(client, method, params)
    status, code, message = _error(excinfo)
    assert (status, code) == (403, EXPECTED[family][3])
    if family != "rest-xml":
        assert "Signature expired" in message


def test_tampered_body_refused(server: ServerProcess) -> None:
    """A signed query request whose body changed after signing fails the signature."""
    creds = Credentials(server.env["AWS_ACCESS_KEY_ID"], server.env["AWS_SECRET_ACCESS_KEY"])
    request = AWSRequest(
        "POST",
        server.url + "/",
        data=b"Action=GetCallerIdentity&Version=2011-06-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    botocore.auth.SigV4Auth(creds, "sts", "us-east-1").add_auth(request)
    prepared = request.prepare()
    tampered = urllib.request.Request(
        prepared.url,
        data=b"Action=GetCallerIdentity&Version=2011-06-16",
        headers=dict(prepared.headers),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(tampered)
    assert excinfo.value.code == 403
    assert b"SignatureDoesNotMatch" in excinfo.value.read()


# ---------------------------------------------------------------- validation and unknown operations


def test_json_missing_required_member(server: ServerProcess) -> None:
    client = server.client(
        "sagemaker", config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    with pytest.raises(ClientError) as excinfo:
        client.describe_training_job()
    status, code, message = _error(excinfo)
    assert (status, code) == (400, "ValidationException")
    assert "trainingJobName" in message and "must not be null" in message


def test_query_bad_enum(server: ServerProcess) -> None:
    client = server.client("iam")
    with pytest.raises(ClientError) as excinfo:
        client.list_policies(Scope="Everywhere")
    status, code, message = _error(excinfo)
    assert (status, code) == (400, "ValidationError")
    assert "'scope'" in message and "enum value set" in message


def test_json_wrong_type_is_a_clear_400(server: ServerProcess) -> None:
    client = server.client(
        "sagemaker", config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    with pytest.raises(ClientError) as excinfo:
        client.describe_training_job(TrainingJobName=["not", "a", "string"])
    status, code, _ = _error(excinfo)
    assert status == 400 and code == "SerializationException"


def test_unimplemented_operation_is_400_naming_it(server: ServerProcess) -> None:
    client = server.client("sagemaker")
    with pytest.raises(ClientError) as excinfo:
        client.list_clusters()
    status, code, message = _error(excinfo)
    assert status == 400 and code == "UnsupportedOperation" and "ListClusters" in message


# ---------------------------------------------------------------- STS AssumeRole


TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def test_assume_role_credentials_work_until_they_expire(server: ServerProcess) -> None:
    iam = server.client("iam")
    account = server.client("sts").get_caller_identity()["Account"]
    # The role must trust the caller, not only SageMaker: the account's identities, decided by their policies.
    trust = json.loads(TRUST)
    trust["Statement"].append({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                               "Action": "sts:AssumeRole"})
    role = iam.create_role(RoleName="assume-test", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    creds = server.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="s1")["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assumed = server.client(
        "sts",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    identity = assumed.get_caller_identity()
    assert identity["Arn"].endswith(":assumed-role/assume-test/s1")

    # Without the session token the temporary key is not enough.
    no_token = server.client(
        "sts", aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"]
    )
    with pytest.raises(ClientError) as excinfo:
        no_token.get_caller_identity()
    assert _error(excinfo)[0] == 403

    # Let the clock run out: move the expiry into the past, as if the duration had passed.
    with sqlite3.connect(server.data_dir / "sagestack.db") as conn:
        conn.execute(
            "UPDATE sts_sessions SET expiration = ? WHERE access_key_id = ?",
            ("2000-01-01 00:00:00.000000", creds["AccessKeyId"]),
        )
    time.sleep(2.2)  # the server caches credentials for 2 s
    with pytest.raises(ClientError) as excinfo:
        assumed.get_caller_identity()
    status, code, _ = _error(excinfo)
    assert (status, code) == (403, "ExpiredToken")


def test_assume_missing_role_denied(server: ServerProcess) -> None:
    account = server.client("sts").get_caller_identity()["Account"]
    with pytest.raises(ClientError) as excinfo:
        server.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/nope", RoleSessionName="xy")
    assert _error(excinfo)[:2] == (403, "AccessDenied")


# ---------------------------------------------------------------- load and durability


def test_concurrent_signed_calls_memory_flat(server: ServerProcess) -> None:
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    clients = [server.client("sts") for _ in range(16)]
    failures: list[BaseException] = []

    def worker(client: Any, count: int) -> None:
        try:
            for _ in range(count):
                client.get_caller_identity()
        except BaseException as exc:
            failures.append(exc)

    def burst(count: int) -> None:
        threads = [threading.Thread(target=worker, args=(c, count)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    burst(50)  # warm up: caches, thread pool, allocator
    before = proc.memory_info().rss
    burst(200)
    after = proc.memory_info().rss
    assert not failures, failures[:3]
    assert after - before < 20 * 1024 * 1024, f"RSS grew by {(after - before) / 2**20:.1f} MiB"


def test_state_survives_sigkill(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    iam = fresh_server.client("iam")
    iam.create_user(UserName="durable")
    iam.create_role(RoleName="durable-role", AssumeRolePolicyDocument=TRUST)
    before = fresh_server.client("sts").get_caller_identity()
    env_before = dict(fresh_server.env)
    fresh_server.kill()
    fresh_server.start()
    assert fresh_server.env["AWS_SECRET_ACCESS_KEY"] == env_before["AWS_SECRET_ACCESS_KEY"]
    assert fresh_server.client("sts").get_caller_identity()["Account"] == before["Account"]
    iam = fresh_server.client("iam")
    assert iam.get_user(UserName="durable")["User"]["UserName"] == "durable"
    assert iam.get_role(RoleName="durable-role")["Role"]["AssumeRolePolicyDocument"]["Statement"]


def test_https_with_ca_bundle(tmp_path: Any) -> None:
    proc = ServerProcess(tmp_path / "tls-data", tls=True).start()
    try:
        assert proc.url.startswith("https://")
        assert "AWS_CA_BUNDLE" in proc.env
        assert proc.client("sts").get_caller_identity()["Arn"].endswith(":user/admin")
    finally:
        proc.stop()


def test_cloudwatch_speaks_query_protocol_too(server: ServerProcess) -> None:
    """Older botocores send CloudWatch as awsQuery; the same operations answer in XML."""
    server.client("cloudwatch").put_metric_data(Namespace="QueryCheck", MetricData=[{"MetricName": "M", "Value": 1.0}])
    creds = Credentials(server.env["AWS_ACCESS_KEY_ID"], server.env["AWS_SECRET_ACCESS_KEY"])
    body = b"Action=ListMetrics&Version=2010-08-01&Namespace=QueryCheck"
    request = AWSRequest("POST", server.url + "/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(creds, "monitoring", "us-east-1").add_auth(request)
    prepared = request.prepare()
    with urllib.request.urlopen(urllib.request.Request(prepared.url, data=body, headers=dict(prepared.headers),
                                                       method="POST")) as response:
        text = response.read().decode()
    assert "<ListMetricsResponse" in text and "<MetricName>M</MetricName>" in text
    bad = AWSRequest("POST", server.url + "/", data=b"Action=GetMetricStatistics&Version=2010-08-01",
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(creds, "monitoring", "us-east-1").add_auth(bad)
    prepared = bad.prepare()
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(urllib.request.Request(prepared.url, data=bad.body, headers=dict(prepared.headers),
                                                      method="POST"))
    assert excinfo.value.code == 400
    assert b"<Code>" in excinfo.value.read()
