"""Notebook instances against a real server: JupyterLab behind the proxy, kernels wired to the platform."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sagestack.logic.notebook_tokens import COOKIE_NAME, Claims, TokenSigner
from sagestack.testing.server_process import ServerProcess
from tests.integration.browser import render
from tests.integration.notebook_support import LIFECYCLE_ECHO, JupyterSession, notebook_role, wait_in_service
from tests.integration.training_support import channel, training_request, unique, wait_for_job

LOG_GROUP = "/aws/sagemaker/NotebookInstances"

TUTORIAL_CELLS = [
    # Step 1 of the tutorial: role, session, bucket (no call may reach AWS).
    "import boto3, sagemaker\n"
    "import matplotlib, sklearn, xgboost, numpy as np, pandas as pd\n"
    "from sagemaker import get_execution_role\n"
    "role = get_execution_role()\n"
    "sess = sagemaker.Session()\n"
    "bucket = sess.default_bucket()\n"
    "region = sess.boto_region_name\n"
    "print('ROLE', role)\nprint('BUCKET', bucket)\n"
    "print('CALLER', boto3.client('sts').get_caller_identity()['Arn'])",
    # Step 2: small data, uploaded with the SDK.
    "rng = np.random.default_rng(0)\n"
    "X = rng.normal(size=(300, 4))\n"
    "y = (X[:, 0] + X[:, 1] > 0).astype(int)\n"
    "pd.DataFrame(np.column_stack([y, X])).to_csv('train.csv', header=False, index=False)\n"
    "train_uri = sess.upload_data('train.csv', bucket=bucket, key_prefix='notebook-test/train')\n"
    "print('UPLOADED', train_uri)",
    # Step 3: the built-in XGBoost, a couple of rounds.
    "from sagemaker.inputs import TrainingInput\n"
    "container = sagemaker.image_uris.retrieve('xgboost', region, '1.7-1')\n"
    "xgb = sagemaker.estimator.Estimator(container, role, instance_count=1, instance_type='ml.m5.large',\n"
    "                                    output_path=f's3://{bucket}/notebook-test/output', sagemaker_session=sess)\n"
    "xgb.set_hyperparameters(objective='binary:logistic', num_round=2, max_depth=3)\n"
    "xgb.fit({'train': TrainingInput(train_uri, content_type='csv')})\n"
    "print('MODEL', xgb.model_data)",
]


def _script(text: str) -> list[dict[str, str]]:
    return [{"Content": base64.b64encode(text.encode()).decode()}]


def _log_messages(server: ServerProcess, stream: str) -> list[str]:
    logs = server.client("logs")
    events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True)["events"]
    return [e["message"] for e in events]


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def _gone(pid: int, timeout: float = 10) -> bool:
    """Ended (a zombie waiting for its reaper counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _jupyter_port(server: ServerProcess, name: str) -> int:
    """Jupyter records its port in its runtime dir (the test reads the data dir directly)."""
    runtime = server.data_dir / "notebooks" / name / ".sagestack" / "jupyter-runtime"
    (info,) = runtime.glob("jpserver-*.json")
    return int(json.loads(info.read_text())["port"])


@pytest.fixture(scope="module")
def instance(server: ServerProcess) -> Iterator[dict[str, Any]]:
    """One instance with a lifecycle configuration, InService, shared by the read-only tests of this module."""
    sm = server.client("sagemaker")
    config = unique("lcc")
    sm.create_notebook_instance_lifecycle_config(
        NotebookInstanceLifecycleConfigName=config,
        OnCreate=_script("echo created-once > \"$HOME/SageMaker/on-create.txt\"\n"),
        OnStart=_script(f"echo {LIFECYCLE_ECHO} \"$AWS_DEFAULT_REGION\"\n"),
    )
    name = unique("nb")
    role = notebook_role(server)
    started = time.monotonic()
    arn = sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role,
                                      LifecycleConfigName=config, VolumeSizeInGB=10,
                                      Tags=[{"Key": "team", "Value": "ml"}])["NotebookInstanceArn"]
    wait_in_service(sm, name)
    info = {"name": name, "arn": arn, "role": role, "config": config, "seconds": time.monotonic() - started}
    yield info
    try:
        sm.stop_notebook_instance(NotebookInstanceName=name)
        sm.get_waiter("notebook_instance_stopped").wait(NotebookInstanceName=name, WaiterConfig={"Delay": 1})
        sm.delete_notebook_instance(NotebookInstanceName=name)
    except ClientError:
        pass


@pytest.fixture(scope="module")
def jupyter(server: ServerProcess, instance: dict[str, Any]) -> Iterator[JupyterSession]:
    url = server.client("sagemaker").create_presigned_notebook_instance_url(
        NotebookInstanceName=instance["name"], SessionExpirationDurationInSeconds=1800)["AuthorizedUrl"]
    session = JupyterSession(url)
    yield session
    session.close()


# ---------------------------------------------------------------- API


def test_created_in_service_quickly_with_every_field(server: ServerProcess, instance: dict[str, Any]) -> None:
    assert instance["seconds"] < 30, instance
    sm = server.client("sagemaker")
    desc = sm.describe_notebook_instance(NotebookInstanceName=instance["name"])
    assert desc["NotebookInstanceStatus"] == "InService"
    assert desc["NotebookInstanceArn"] == instance["arn"]
    assert instance["arn"].endswith(f":notebook-instance/{instance['name']}")
    assert desc["RoleArn"] == instance["role"]
    assert desc["InstanceType"] == "ml.t3.medium"
    assert desc["VolumeSizeInGB"] == 10
    assert desc["DirectInternetAccess"] == "Enabled"
    assert desc["RootAccess"] == "Enabled"
    assert desc["PlatformIdentifier"].startswith("notebook-")
    assert desc["NotebookInstanceLifecycleConfigName"] == instance["config"]
    assert desc["Url"] == f"{server.url.split('://')[1]}/_sagestack/notebooks/{instance['name']}"
    assert desc["LastModifiedTime"] >= desc["CreationTime"]
    for absent in ("FailureReason", "AcceleratorTypes", "SecurityGroups", "InstanceMetadataServiceConfiguration"):
        assert absent not in desc
    listed = sm.list_notebook_instances(NameContains=instance["name"])["NotebookInstances"]
    assert [i["NotebookInstanceName"] for i in listed] == [instance["name"]]
    assert listed[0]["NotebookInstanceStatus"] == "InService"
    by_config = sm.list_notebook_instances(NotebookInstanceLifecycleConfigNameContains=instance["config"])
    assert [i["NotebookInstanceName"] for i in by_config["NotebookInstances"]] == [instance["name"]]
    assert sm.list_tags(ResourceArn=instance["arn"])["Tags"] == [{"Key": "team", "Value": "ml"}]
    config = sm.describe_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=instance["config"])
    assert base64.b64decode(config["OnStart"][0]["Content"]).decode().startswith(f"echo {LIFECYCLE_ECHO}")


def test_lifecycle_output_in_cloudwatch_logs(server: ServerProcess, instance: dict[str, Any]) -> None:
    name = instance["name"]
    assert f"{LIFECYCLE_ECHO} us-east-1" in _log_messages(server, f"{name}/LifecycleConfigOnStart")
    streams = server.client("logs").describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/")
    names = {s["logStreamName"] for s in streams["logStreams"]}
    assert {f"{name}/LifecycleConfigOnCreate", f"{name}/LifecycleConfigOnStart", f"{name}/jupyter.log"} <= names


def test_validation_as_sagemaker(server: ServerProcess, instance: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    role = instance["role"]
    missing_role = role.rsplit("/", 1)[0] + "/no-such-role"
    with pytest.raises(ClientError) as excinfo:
        sm.create_notebook_instance(NotebookInstanceName=unique("nb"), InstanceType="ml.t3.medium",
                                    RoleArn=missing_role)
    assert _error(excinfo)[0] == "ValidationException" and "Could not assume role" in _error(excinfo)[1]
    with pytest.raises(ClientError) as excinfo:
        sm.create_notebook_instance(NotebookInstanceName=unique("nb"), InstanceType="ml.t3.huge", RoleArn=role)
    assert _error(excinfo)[0] == "ValidationException"
    unchecked = server.client("sagemaker", config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as excinfo:
        unchecked.create_notebook_instance(NotebookInstanceName=unique("nb"), InstanceType="ml.t3.medium",
                                           RoleArn=role, VolumeSizeInGB=2)
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.create_notebook_instance(NotebookInstanceName=unique("nb"), InstanceType="ml.t3.medium", RoleArn=role,
                                    LifecycleConfigName="no-such-config")
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.create_notebook_instance(NotebookInstanceName=instance["name"], InstanceType="ml.t3.medium", RoleArn=role)
    assert "duplicate" in _error(excinfo)[1]
    with pytest.raises(ClientError) as excinfo:
        sm.delete_notebook_instance(NotebookInstanceName=instance["name"])
    assert _error(excinfo) == ("ValidationException", f"Status (InService) not in ([Stopped, Failed]). Unable to "
                                                      f"transition to (Deleting) for Notebook Instance "
                                                      f"({instance['arn']}).")
    with pytest.raises(ClientError) as excinfo:
        sm.start_notebook_instance(NotebookInstanceName=instance["name"])
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.update_notebook_instance(NotebookInstanceName=instance["name"], InstanceType="ml.m5.xlarge")
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.describe_notebook_instance(NotebookInstanceName="no-such-instance")
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.delete_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=instance["config"])
    assert "in use" in _error(excinfo)[1]
    with pytest.raises(ClientError) as excinfo:
        sm.create_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=unique("lcc"),
                                                     OnStart=[{"Content": "not base64!"}])
    assert _error(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        unchecked.create_presigned_notebook_instance_url(NotebookInstanceName=instance["name"],
                                                         SessionExpirationDurationInSeconds=60)
    assert _error(excinfo)[0] == "ValidationException"


# ---------------------------------------------------------------- browser and auth


def test_presigned_url_opens_jupyterlab_in_chromium(server: ServerProcess, instance: dict[str, Any]) -> None:
    url = server.client("sagemaker").create_presigned_notebook_instance_url(
        NotebookInstanceName=instance["name"])["AuthorizedUrl"]
    assert url.startswith(f"{server.url}/_sagestack/notebooks/{instance['name']}?authToken=")
    page = render(url)
    assert "<title>JupyterLab</title>" in page.dom, page.console[-2000:]
    assert "jp-LabShell" in page.dom
    assert "jp-Launcher" in page.dom and "conda_python3" in page.dom  # the kernelspecs came through the proxy


def test_direct_jupyter_port_needs_the_token(server: ServerProcess, instance: dict[str, Any]) -> None:
    port = _jupyter_port(server, instance["name"])
    base = f"http://127.0.0.1:{port}/_sagestack/notebooks/{instance['name']}/"
    assert httpx.get(f"{base}api/kernels").status_code == 403
    assert httpx.get(f"{base}api/kernels", headers={"Authorization": "token guessed"}).status_code == 403
    assert httpx.post(f"{base}api/kernels", json={"name": "conda_python3"}).status_code == 403
    assert httpx.get(f"{base}lab").status_code == 302  # to Jupyter's login page, which wants the token
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{port}/_sagestack/notebooks/{instance['name']}/api/events/subscribe").close()


def test_proxy_refuses_without_a_valid_session(server: ServerProcess, instance: dict[str, Any]) -> None:
    base = f"{server.url}/_sagestack/notebooks/{instance['name']}/"
    assert httpx.get(f"{base}lab").status_code == 403
    assert httpx.get(f"{base}api/contents", cookies={COOKIE_NAME: "forged.value"}).status_code == 403
    with pytest.raises(InvalidStatus):
        connect(f"{base.replace('http', 'ws', 1)}api/events/subscribe").close()


def test_expired_and_forged_presigned_urls_are_refused(server: ServerProcess, instance: dict[str, Any]) -> None:
    sm = server.client("sagemaker")
    name = instance["name"]
    good = sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"]
    prefix, token = good.split("?authToken=")
    payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    signer = TokenSigner(server.data_dir / "notebook-url.key")  # the server's own key: a genuine signature
    expired = signer.issue(Claims("url", name, claims["c"], int(time.time()) - 1, 1800))
    forged_signature = f"{payload}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}"
    other_payload = base64.urlsafe_b64encode(json.dumps({**claims, "n": "other"}).encode()).decode().rstrip("=")
    session_as_url = signer.issue(Claims("session", name, claims["c"], int(time.time()) + 600))
    for bad in (expired, forged_signature, f"{other_payload}.{signature}", session_as_url, ""):
        refused = httpx.get(f"{prefix}?authToken={bad}", follow_redirects=False)
        assert refused.status_code == 403, bad
        assert COOKIE_NAME not in refused.cookies
    expired_session = signer.issue(Claims("session", name, claims["c"], int(time.time()) - 1))
    assert httpx.get(f"{prefix}/api/contents", cookies={COOKIE_NAME: expired_session}).status_code == 403
    opened = httpx.get(good, follow_redirects=False)
    assert opened.status_code == 302 and opened.headers["location"].endswith(f"/{name}/lab")
    set_cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and f"Path=/_sagestack/notebooks/{name}/" \
        in set_cookie and "Max-Age=43200" in set_cookie
    key_file = server.data_dir / "notebook-url.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_cross_site_requests_are_refused(jupyter: JupyterSession) -> None:
    evil = {"Origin": "http://evil.example"}
    assert jupyter.http.post("api/kernels", json={"name": "conda_python3"}, headers=evil).status_code == 403
    assert jupyter.http.get("api/kernelspecs", headers=evil).status_code == 200  # reads are harmless
    assert jupyter.http.post("api/kernels", json={"name": "conda_python3"},
                             headers={"Origin": jupyter.origin}).status_code == 201


# ---------------------------------------------------------------- kernels wired to the platform


def test_tutorial_notebook_runs_in_conda_python3(server: ServerProcess, instance: dict[str, Any],
                                                 jupyter: JupyterSession) -> None:
    specs = jupyter.api("GET", "kernelspecs")
    assert specs["default"] == "conda_python3"
    assert specs["kernelspecs"]["conda_python3"]["spec"]["display_name"] == "conda_python3"
    jupyter.put_notebook("tutorial.ipynb", TUTORIAL_CELLS)
    kernel = jupyter.start_kernel("tutorial.ipynb")
    try:
        assert kernel.name == "conda_python3"
        outputs = []
        for cell in TUTORIAL_CELLS:
            result = kernel.execute(cell, timeout=300)
            assert result.status == "ok", (result.error, result.stdout[-3000:], result.stderr[-3000:])
            outputs.append(result.stdout)
    finally:
        kernel.close()
    account = instance["arn"].split(":")[4]
    role_name = instance["role"].rsplit("/", 1)[1]
    assert f"ROLE {instance['role']}" in outputs[0]
    assert f"BUCKET sagemaker-us-east-1-{account}" in outputs[0]
    assert f"CALLER arn:aws:sts::{account}:assumed-role/{role_name}/SageMaker" in outputs[0]
    assert f"UPLOADED s3://sagemaker-us-east-1-{account}/notebook-test/train/train.csv" in outputs[1]
    model = outputs[2].split("MODEL ", 1)[1].strip()
    bucket, key = model[5:].split("/", 1)
    assert server.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    # The notebook ran in the instance's root directory, like /home/ec2-user/SageMaker.
    assert (server.data_dir / "notebooks" / instance["name"] / "SageMaker" / "train.csv").exists()


# ---------------------------------------------------------------- lifecycle


def test_stop_start_keeps_files_and_delete_removes_everything(server: ServerProcess) -> None:
    sm = server.client("sagemaker")
    name = unique("nb")
    config = unique("lcc")
    sm.create_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config,
                                                 OnStart=_script(f"echo {LIFECYCLE_ECHO}\n"))
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.m5.xlarge",
                                RoleArn=notebook_role(server), LifecycleConfigName=config)
    wait_in_service(sm, name)
    session = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"])
    session.put_text("kept.txt", "written before stop")
    kernel = session.start_kernel("scratch.ipynb")
    pid = int(kernel.execute("import os; print(os.getpid())").stdout)
    kernel.close()
    session.close()

    sm.stop_notebook_instance(NotebookInstanceName=name)
    assert sm.describe_notebook_instance(NotebookInstanceName=name)["NotebookInstanceStatus"] in ("Stopping",
                                                                                                 "Stopped")
    sm.get_waiter("notebook_instance_stopped").wait(NotebookInstanceName=name, WaiterConfig={"Delay": 1})
    assert _gone(pid), "the kernel outlived its stopped instance"
    base = f"{server.url}/_sagestack/notebooks/{name}/"
    stopped_url = sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"]
    cookie = httpx.get(stopped_url, follow_redirects=False).cookies[COOKIE_NAME]
    assert httpx.get(f"{base}lab", cookies={COOKIE_NAME: cookie}).status_code == 503

    sm.update_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", VolumeSizeInGB=20)
    desc = sm.describe_notebook_instance(NotebookInstanceName=name)
    assert (desc["NotebookInstanceStatus"], desc["InstanceType"], desc["VolumeSizeInGB"]) == ("Stopped",
                                                                                           "ml.t3.medium", 20)
    started = time.monotonic()
    sm.start_notebook_instance(NotebookInstanceName=name)
    wait_in_service(sm, name)
    assert time.monotonic() - started < 30
    session = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"])
    assert session.get_text("kept.txt") == "written before stop"
    session.close()
    assert _log_messages(server, f"{name}/LifecycleConfigOnStart").count(LIFECYCLE_ECHO) == 2

    sm.stop_notebook_instance(NotebookInstanceName=name)
    sm.get_waiter("notebook_instance_stopped").wait(NotebookInstanceName=name, WaiterConfig={"Delay": 1})
    sm.delete_notebook_instance(NotebookInstanceName=name)
    sm.get_waiter("notebook_instance_deleted").wait(NotebookInstanceName=name, WaiterConfig={"Delay": 1})
    assert not (server.data_dir / "notebooks" / name).exists()
    assert name not in [i["NotebookInstanceName"] for i in sm.list_notebook_instances()["NotebookInstances"]]
    sm.delete_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)
    with pytest.raises(ClientError):
        sm.describe_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)


def test_failing_lifecycle_script_fails_the_instance(server: ServerProcess) -> None:
    sm = server.client("sagemaker")
    name, config = unique("nb"), unique("lcc")
    config_arn = sm.create_notebook_instance_lifecycle_config(
        NotebookInstanceLifecycleConfigName=config, OnStart=_script("echo about to fail\nexit 3\n"),
    )["NotebookInstanceLifecycleConfigArn"]
    arn = sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t2.medium",
                                      RoleArn=notebook_role(server), LifecycleConfigName=config)["NotebookInstanceArn"]
    with pytest.raises(Exception, match="Failed"):
        wait_in_service(sm, name)
    desc = sm.describe_notebook_instance(NotebookInstanceName=name)
    assert desc["NotebookInstanceStatus"] == "Failed"
    assert desc["FailureReason"] == (
        f"Notebook Instance Lifecycle Config '{config_arn}' for Notebook Instance '{arn}' failed. Please check "
        "your CloudWatch logs for more details if your Notebook Instance has Internet access.")
    assert "about to fail" in _log_messages(server, f"{name}/LifecycleConfigOnStart")
    # Fix the script, start again: the instance comes up.
    sm.update_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config,
                                                 OnStart=_script("echo fixed\n"))
    sm.start_notebook_instance(NotebookInstanceName=name)
    wait_in_service(sm, name)
    assert "FailureReason" not in sm.describe_notebook_instance(NotebookInstanceName=name)
    sm.stop_notebook_instance(NotebookInstanceName=name)
    sm.get_waiter("notebook_instance_stopped").wait(NotebookInstanceName=name, WaiterConfig={"Delay": 1})
    sm.delete_notebook_instance(NotebookInstanceName=name)


# ---------------------------------------------------------------- server restarts, timeouts, renewals


def test_timeout_credential_renewal_and_restart(fresh_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """One server with short limits: 2 s lifecycle timeout, 8 s credentials, 1 GiB memory; then killed and restarted."""
    monkeypatch.setenv("SAGESTACK_NOTEBOOK_LIFECYCLE_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("SAGESTACK_NOTEBOOK_CREDENTIAL_SECONDS", "8")
    monkeypatch.setenv("SAGESTACK_NOTEBOOK_MEMORY_MIB", "1024")
    server = fresh_server.start()
    sm = server.client("sagemaker")
    role = notebook_role(server)

    # A lifecycle script that runs too long fails the instance with SageMaker's reason.
    slow, config = unique("nb"), unique("lcc")
    sm.create_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config,
                                                 OnCreate=_script("sleep 30\n"))
    sm.create_notebook_instance(NotebookInstanceName=slow, InstanceType="ml.t3.medium", RoleArn=role,
                                LifecycleConfigName=config)
    with pytest.raises(Exception, match="Failed"):
        wait_in_service(sm, slow)
    assert "took longer than 5 minutes" in sm.describe_notebook_instance(NotebookInstanceName=slow)["FailureReason"]

    # Credentials are renewed before they expire; a long-lived boto3 client in the kernel keeps working.
    name = unique("nb")
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role)
    wait_in_service(sm, name)
    session = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"])
    session.put_text("kept.txt", "survives a server restart")
    kernel = session.start_kernel("renew.ipynb")
    creds = server.data_dir / "notebooks" / name / ".sagestack" / "credentials.json"
    first_key = json.loads(creds.read_text())["AccessKeyId"]
    result = kernel.execute("import boto3, time\ns3 = boto3.client('s3')\nprint(len(s3.list_buckets()['Buckets']))\n"
                            "time.sleep(12)\nprint(len(s3.list_buckets()['Buckets']))\nimport os\nprint(os.getpid())")
    assert result.status == "ok", result.error
    kernel_pid = int(result.stdout.split()[-1])
    assert json.loads(creds.read_text())["AccessKeyId"] != first_key
    kernel.close()

    # Over the instance's memory, the greedy kernel is killed (and Jupyter restarts it), as the OOM killer would.
    greedy = session.start_kernel("greedy.ipynb")
    with pytest.raises(TimeoutError):
        greedy.execute("import numpy as np\nx = np.ones(160 * 2**20)\nimport time\ntime.sleep(60)", timeout=10)
    greedy.close()
    assert any("out of memory" in m for m in _log_messages(server, f"{name}/jupyter.log"))
    session.close()

    # kill -9: Jupyter and its kernels go with the server; a restart brings the instance back.
    server.kill(signal.SIGKILL)
    assert _gone(kernel_pid), "a kernel outlived the server"
    server.start()
    sm = server.client("sagemaker")
    assert sm.describe_notebook_instance(NotebookInstanceName=name)["NotebookInstanceStatus"] in ("Pending",
                                                                                                 "InService")
    wait_in_service(sm, name)
    assert sm.describe_notebook_instance(NotebookInstanceName=slow)["NotebookInstanceStatus"] == "Failed"
    session = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"])
    assert session.get_text("kept.txt") == "survives a server restart"
    session.close()


def test_kernel_files_are_private(server: ServerProcess, instance: dict[str, Any]) -> None:
    runtime: Path = server.data_dir / "notebooks" / instance["name"] / ".sagestack"
    for secret in ("credentials.json", "aws-config", "jupyter/jupyter_server_config.json"):
        assert (runtime / secret).stat().st_mode & 0o077 == 0, secret


def test_a_kernel_works_as_the_instances_role(server: ServerProcess) -> None:
    """A role made for "Specific S3 buckets: A": boto3 in the notebook reads A and is refused on B."""
    s3 = server.client("s3")
    bucket_a, bucket_b = unique("nb-bucket-a"), unique("nb-bucket-b")
    for bucket in (bucket_a, bucket_b):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="data.csv", Body=b"1,2,3\n")
    rows = "\n".join(f"{i % 2},{i % 7},{(i * 3) % 11}" for i in range(100))
    s3.put_object(Bucket=bucket_a, Key="train/train.csv", Body=rows.encode())
    sm = server.client("sagemaker")
    name, job = unique("nb"), unique("nb-job")
    role = notebook_role(server, [bucket_a])
    request = training_request(job, role, bucket_a, [channel("train", f"s3://{bucket_a}/train")],
                               hyperparameters={"objective": "binary:logistic", "num_round": "3"})
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role)
    wait_in_service(sm, name)
    session = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"])
    try:
        kernel = session.start_kernel("role.ipynb")
        result = kernel.execute(
            "import boto3, botocore\n"
            "s3 = boto3.client('s3')\n"
            f"print('A', s3.get_object(Bucket='{bucket_a}', Key='data.csv')['Body'].read())\n"
            "try:\n"
            f"    s3.get_object(Bucket='{bucket_b}', Key='data.csv')\n"
            "except botocore.exceptions.ClientError as error:\n"
            "    print('B', error.response['Error']['Code'], error.response['Error']['Message'])\n"
            # The notebook trains from bucket A as its role (which may pass itself to SageMaker).
            f"print('JOB', boto3.client('sagemaker').create_training_job(**{request!r})['TrainingJobArn'])\n",
            timeout=60)
        kernel.close()
    finally:
        session.close()
        sm.stop_notebook_instance(NotebookInstanceName=name)
    assert "A b'1,2,3\\n'" in result.stdout, result
    assert 'B AccessDenied User: arn:aws:sts::' in result.stdout, result
    assert f'on resource: "arn:aws:s3:::{bucket_b}/data.csv"' in result.stdout, result
    assert "JOB arn:aws:sagemaker:" in result.stdout, result
    assert wait_for_job(sm, job)["TrainingJobStatus"] == "Completed"
