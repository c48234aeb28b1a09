"""Model-server processes shared by endpoints and batch transform: fetch the model, launch, probe, stop."""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.compute import InstanceSpec, LocalBackend, LocalInstance, free_port
from sagestack.logic.logs import append_events, ensure_log_stream
from sagestack.serving.upstream import UpstreamPool
from sagestack.storage import files

READY_TIMEOUT = 120.0
MODULE = "sagestack.serving.model_server"
#: Preloaded by the serving zygote: a model server then starts in milliseconds, not seconds.
WARM = ("sagestack.serving.model_server", "sagestack.serving.xgboost_handler")
#: One OpenMP thread per model server: single-row predictions are fastest that way.
WARM_ENV = {"OMP_NUM_THREADS": "1"}


class DeployError(Exception):
    """A model server that cannot be brought up; its message becomes FailureReason."""


@dataclass
class ModelServer:
    port: int
    process: LocalInstance
    pool: UpstreamPool

    def await_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise DeployError(f"the model server exited with code {code}.")
            if ping(self.port, timeout=1.0):
                return
            time.sleep(0.02)
        raise DeployError(f"the model server did not answer /ping within {timeout:.0f} seconds.")

    def stop(self) -> None:
        self.pool.close()
        self.process.terminate()
        if self.process.wait(5) is None:
            self.process.kill()
            self.process.wait(5)
        if self.pool.unix_socket:  # a killed server leaves its socket file behind
            Path(self.pool.unix_socket).unlink(missing_ok=True)


def fetch_model(store: Any, url: str, model_dir: Path) -> None:
    """Download ``model.tar.gz`` from the object store and unpack it into ``model_dir``."""
    shutil.rmtree(model_dir.parent, ignore_errors=True)
    model_dir.mkdir(parents=True)
    bucket, key = files.parse_s3_uri(url)
    archive = model_dir.parent / "model.tar.gz"
    try:
        files.fetch(store, store.head_object(bucket, key), archive)
    except AwsError as exc:
        raise DeployError(f"Failed to download model data from {url}: {exc.message}") from exc
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(model_dir, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise DeployError(f"Failed to extract model data archive from {url}: {exc}. "
                          "Please ensure that the object located at the URL is a valid tar.gz archive.") from exc


def role_environment(platform: Any, role: Any) -> dict[str, str]:
    """What lets a process call AWS as its work's role (a ``RoleSession``), at this server."""
    if role is None:
        return {}
    env = dict(role.environment())
    for name, url in (("AWS_ENDPOINT_URL", platform.server_url), ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
                                                                  platform.runtime_url)):
        if url:
            env[name] = url
    return env


def log_group_arn(region: str, account: str, group: str) -> str:
    """The ARN logs:CreateLogStream and logs:PutLogEvents are authorized on (the group's streams)."""
    return f"arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:*"


def may_write_logs(platform: Any, role_arn: str, group: str) -> bool:
    """Whether the work of ``role_arn`` may have its output in ``group`` (its role may write there)."""
    arn = log_group_arn(platform.region, platform.account_id, group)
    return all(platform.role_may(role_arn, action, arn) for action in ("logs:CreateLogStream", "logs:PutLogEvents"))


def compiled_models_dir(data_dir: Path) -> Path:
    """Where model servers cache trees compiled to C, shared by every endpoint and transform job."""
    return data_dir / "compiled-models"


def launch_model_server(backend: LocalBackend, db: Any, model_dir: Path, environment: dict[str, str], *,
                        log_group: str | None, log_stream: str, data_dir: Path,
                        extra_env: dict[str, str] | None = None) -> ModelServer:
    """Start one model server on a free loopback port; its output goes to CloudWatch Logs
    (``log_group=None``: nowhere, when the execution role may not write logs)."""
    port = free_port()
    # The router talks to the instance over a Unix socket (less kernel work per request than loopback
    # TCP); the TCP port stays for /ping and anyone speaking the container contract directly.
    unix_socket = str(backend.runtime_dir / f"model-server-{port}.sock") if backend.runtime_dir else None
    if log_group is not None:
        ensure_log_stream(db, log_group, log_stream)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGESTACK_"))}
    env.update(environment)
    env.update({"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1",
                "SAGESTACK_COMPILED_MODELS_DIR": str(compiled_models_dir(data_dir))})
    if "SAGESTACK_COMPILE_MODELS" in os.environ:  # the operator's switch reaches every model server
        env["SAGESTACK_COMPILE_MODELS"] = os.environ["SAGESTACK_COMPILE_MODELS"]
    env.update(extra_env or {})
    spec = InstanceSpec(
        name=log_stream,
        argv=[sys.executable, "-m", MODULE, "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
              *(["--unix-socket", unix_socket] if unix_socket else [])],
        env=env,
        cwd=model_dir.parent,
        on_output=(lambda batch: append_events(db, log_group, log_stream, batch)) if log_group is not None
        else (lambda batch: None),
        module=MODULE,
        warm=WARM,
        warm_env=WARM_ENV,
        batch_scheduling=True,
    )
    return ModelServer(port, backend.start(spec), UpstreamPool("127.0.0.1", port, unix_socket=unix_socket))


def ping(port: int, timeout: float) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()

