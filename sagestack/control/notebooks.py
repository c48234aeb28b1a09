"""Run notebook instances: Pending → InService → Stopping → Stopped, Failed, Deleting.

Every instance is a JupyterLab server (the real ``jupyterlab`` package), a
child process of the sagestack server listening on 127.0.0.1 on a private port,
behind the authenticating proxy of web/notebook_proxy.py. Its files live in
``<data-dir>/notebooks/<name>/`` (the instance's HOME, like ``/home/ec2-user``):
``SageMaker/`` is Jupyter's root (the user's notebooks, kept across stop/start),
``.sagestack/`` is rewritten by the platform at every start (Jupyter config with
the token, AWS config and credentials, SDK config, role metadata).

The kernels are wired to the platform: ``AWS_ENDPOINT_URL`` is this server,
credentials are an STS session of the instance's role (``credential_process``
reading a file the platform rewrites before it expires, so long-lived boto3
clients refresh by themselves), the SDK config names the default bucket and
opts out of telemetry, and ``get_execution_role()`` reads the role from the
instance's metadata file (see notebook_runtime/site/sitecustomize.py).

Restart policy: a server restart is a reboot of its instances. Instances left
InService or Pending are started again (OnStart runs again), Stopping ones end
Stopped, Deleting ones are deleted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import delete, select

from sagestack.aws.errors import AwsError
from sagestack.compute import InstanceSpec, LocalBackend, LocalInstance, free_port
from sagestack.control.role_sessions import RoleGone, RoleSession
from sagestack.db.base import utcnow
from sagestack.db.models.identity import SessionCredential
from sagestack.db.models.notebooks import NotebookInstance, NotebookLifecycleConfig
from sagestack.identity import write_private
from sagestack.logic.logs import append_events, ensure_log_stream
from sagestack.logic.notebook_tokens import TokenSigner
from sagestack.logic.tags import drop_tags
from sagestack.platform import Platform
from sagestack.sdk_config import sdk_config_yaml

log = logging.getLogger("sagestack.notebooks")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per readiness probe otherwise

LOG_GROUP = "/aws/sagemaker/NotebookInstances"
PROXY_PREFIX = "/_sagestack/notebooks"
LIFECYCLE_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 10.0
MEMORY_CHECK_SECONDS = 2.0
#: Length of the STS sessions handed to kernels; renewed when half is left. botocore refreshes
#: credential_process credentials 15 minutes before they expire, by then a new file is in place.
CREDENTIAL_SECONDS = 3600
KERNEL_NAME = "conda_python3"
SITE_DIR = Path(__file__).resolve().parents[1] / "notebook_runtime" / "site"
_SIZE_CPUS = {"medium": 2, "large": 2, "xlarge": 4}
_SCRUBBED_PREFIXES = ("AWS_", "SAGESTACK_", "SAGEMAKER_", "JUPYTER", "JPY_", "PYTHON", "XDG_", "IPYTHON")


def instance_vcpus(instance_type: str) -> int:
    """vCPUs of an ml.* type: medium/large 2, xlarge 4, Nxlarge 4N (the EC2 sizing rule)."""
    size = instance_type.rsplit(".", 1)[-1]
    if size in _SIZE_CPUS:
        return _SIZE_CPUS[size]
    match = re.fullmatch(r"(\d+)xlarge", size)
    return 4 * int(match.group(1)) if match else 2


def instance_memory_mib(instance_type: str) -> int:
    """Memory of an ml.* type: GiB per vCPU by family (c 2, r 8, others 4; t*.medium has 4 GiB in all)."""
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else "m5"
    if family.startswith("t") and instance_type.endswith(".medium"):
        return 4 * 1024
    per_cpu = {"c": 2, "r": 8}.get(family[0], 4)
    return instance_vcpus(instance_type) * per_cpu * 1024


def memory_victim(rss: dict[int, int], root: int, limit_bytes: int) -> int | None:
    """Over the limit, the process to kill: the largest one below the Jupyter server (a kernel, a terminal)."""
    if sum(rss.values()) <= limit_bytes:
        return None
    children = {pid: size for pid, size in rss.items() if pid != root}
    return max(children, key=children.__getitem__) if children else None


def lifecycle_reason(config_arn: str, instance_arn: str, timed_out: bool) -> str:
    """FailureReason of a failed lifecycle script, in SageMaker's words."""
    what = "took longer than 5 minutes" if timed_out else "failed"
    return (f"Notebook Instance Lifecycle Config '{config_arn}' for Notebook Instance '{instance_arn}' {what}. "
            "Please check your CloudWatch logs for more details if your Notebook Instance has Internet access.")


class LaunchFailed(Exception):
    """Ends a start with status Failed and this reason."""


@dataclass
class Live:
    """A running Jupyter server, as the proxy needs it."""

    name: str
    port: int
    token: str
    stamp: int
    process: LocalInstance
    memory_mib: int

    @property
    def base_url(self) -> str:
        return f"{PROXY_PREFIX}/{self.name}/"


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: Live | None = None
    #: The lifecycle scripts of the current start (what they left in the background ends with the instance).
    scripts: list[LocalInstance] = field(default_factory=list)
    #: The STS sessions of the instance's role its processes hold (None until its first start).
    role: RoleSession | None = None


def instance_stamp(created: datetime) -> int:
    """Identifies one incarnation of a name (tokens of a deleted namesake must not open it)."""
    return int(created.timestamp() * 1000)


class NotebookController:
    def __init__(self, platform: Platform, server_url: str, backend: LocalBackend | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        self.settings = platform.settings
        self.server_url = server_url
        self.backend = backend or LocalBackend()
        self.root: Path = self.settings.data_dir / "notebooks"
        self.root.mkdir(parents=True, exist_ok=True)
        # Test knobs (the real limits make timeouts and renewals too slow to watch).
        self.lifecycle_timeout = float(os.environ.get("SAGESTACK_NOTEBOOK_LIFECYCLE_TIMEOUT_SECONDS",
                                                      LIFECYCLE_TIMEOUT_SECONDS))
        self.credential_seconds = int(os.environ.get("SAGESTACK_NOTEBOOK_CREDENTIAL_SECONDS", CREDENTIAL_SECONDS))
        self.memory_override_mib = int(os.environ.get("SAGESTACK_NOTEBOOK_MEMORY_MIB", "0"))
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        #: Found by recover(), acted on by startup() once the event loop runs.
        self._to_relaunch: list[str] = []
        self._to_delete: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.Client(timeout=2.0)
        #: Signs presigned URLs and the proxy's session cookies; the key stays in the data dir (0600).
        self.signer = TokenSigner(self.settings.data_dir / "notebook-url.key")

    # ------------------------------------------------------------ public helpers
    def instance_dir(self, name: str) -> Path:
        return self.root / name

    def url_of(self, name: str) -> str:
        """The ``Url`` field: like AWS's ``<name>.notebook.<region>.sagemaker.aws``, host and path, no scheme."""
        return f"{self.server_url.split('://', 1)[1]}{PROXY_PREFIX}/{name}"

    def presigned_url(self, name: str, created: datetime, session_seconds: int) -> str:
        token = self.signer.presign(name, instance_stamp(created), session_seconds)
        return f"{self.server_url}{PROXY_PREFIX}/{name}?authToken={token}"

    def live(self, name: str) -> Live | None:
        slot = self._slots.get(name)
        return slot.live if slot is not None else None

    def _slot(self, name: str) -> _Slot:
        with self._slots_lock:
            return self._slots.setdefault(name, _Slot())

    # ------------------------------------------------------------ API side
    def launch(self, name: str) -> None:
        """Take a Pending instance to InService (or Failed) on a thread of its own."""
        threading.Thread(target=self._launch, args=(name,), name=f"notebook-start:{name}", daemon=True).start()

    def stop(self, name: str) -> None:
        threading.Thread(target=self._stop, args=(name,), name=f"notebook-stop:{name}", daemon=True).start()

    def delete(self, name: str) -> None:
        threading.Thread(target=self._delete, args=(name,), name=f"notebook-delete:{name}", daemon=True).start()

    # ------------------------------------------------------------ server start and stop
    def recover(self) -> None:
        """Settle what the last server process left in flight; instances that were up start again at startup."""
        with self.db.transaction() as session:
            for row in session.scalars(select(NotebookInstance)):
                row.port = None
                if row.session_keys:  # the processes that held them are gone
                    session.execute(delete(SessionCredential).where(
                        SessionCredential.access_key_id.in_(row.session_keys)))
                    row.session_keys = []
                if row.status in ("Stopping", "Updating"):
                    row.status = "Stopped"
                elif row.status in ("InService", "Pending"):
                    row.status = "Pending"
                    self._to_relaunch.append(row.name)
                elif row.status == "Deleting":
                    self._to_delete.append(row.name)

    async def startup(self) -> None:
        for name in self._to_relaunch:
            self.launch(name)
        for name in self._to_delete:
            self.delete(name)
        self._to_relaunch.clear()
        self._to_delete.clear()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renew_forever()), loop.create_task(self._watch_memory_forever())]

    async def shutdown(self) -> None:
        """End every Jupyter server; their rows keep saying InService, so the next start brings them back."""
        for task in self._tasks:
            task.cancel()
        names = [name for name, slot in list(self._slots.items()) if slot.live is not None or slot.scripts]
        await asyncio.gather(*(asyncio.to_thread(self._end_processes, name, 3.0) for name in names))
        self._http.close()

    # ------------------------------------------------------------ start
    def _launch(self, name: str) -> None:
        slot = self._slot(name)
        with slot.lock:
            started = time.monotonic()
            try:
                self._run_launch(name, slot)
            except LaunchFailed as failure:
                self._fail(name, str(failure))
            except Exception as exc:  # a bug of ours must still end the start, never leave it Pending
                log.exception("notebook instance %s failed to start inside sagestack", name)
                self._fail(name, f"InternalServerError: {type(exc).__name__}: {exc}")
            else:
                log.info("notebook instance %s InService in %.1fs", name, time.monotonic() - started)

    def _run_launch(self, name: str, slot: _Slot) -> None:
        row = self._load(name)
        if row is None or row.status != "Pending":
            return
        settings = row.settings
        home = self.instance_dir(name)
        runtime = self._prepare_dirs(home)
        bucket = self._ensure_default_bucket()
        self._write_runtime_files(row, home, runtime, bucket)
        self._issue_credentials(name, settings["RoleArn"], runtime, slot)
        env = self._environment(row, home, runtime)
        config = self._lifecycle_config(settings.get("NotebookInstanceLifecycleConfigName"))
        if config is not None:
            if not row.on_create_done:
                self._run_script(name, row.arn, config, "OnCreate", home, env, slot)
                self._update(name, on_create_done=True)
            self._run_script(name, row.arn, config, "OnStart", home, env, slot)
        elif not row.on_create_done:
            self._update(name, on_create_done=True)
        live = self._start_jupyter(row, home, runtime, env)
        slot.live = live
        if not self._update(name, expect="Pending", status="InService", port=live.port):
            self._end_processes(name)  # deleted or changed meanwhile

    def _prepare_dirs(self, home: Path) -> Path:
        (home / "SageMaker").mkdir(parents=True, exist_ok=True)
        runtime = home / ".sagestack"
        if runtime.exists():
            shutil.rmtree(runtime)
        runtime.mkdir(mode=0o700)
        return runtime

    def _ensure_default_bucket(self) -> str:
        """``sagemaker-<region>-<account>``, the SDK's default bucket, created on first use like the SDK would."""
        bucket = f"sagemaker-{self.settings.region}-{self.platform.account_id}"
        store = self.platform.storage
        try:
            store.create_bucket(bucket, self.settings.region, self.platform.account_id)
        except AwsError as error:
            if error.code != "BucketAlreadyOwnedByYou":
                raise LaunchFailed(f"ClientError: the default bucket {bucket} cannot be created: {error.message}") \
                    from error
        return bucket

    def _write_runtime_files(self, row: NotebookInstance, home: Path, runtime: Path, bucket: str) -> None:
        settings = row.settings
        metadata = {"ResourceArn": row.arn, "ResourceName": row.name, "ExecutionRoleArn": settings["RoleArn"]}
        (runtime / "resource-metadata.json").write_text(json.dumps(metadata))
        (runtime / "sagemaker-config.yaml").write_text(sdk_config_yaml(bucket))
        data_dir = home / ".local" / "share" / "jupyter"
        for kernel, display in ((KERNEL_NAME, "conda_python3"), ("python3", "Python 3 (ipykernel)")):
            self._write_kernelspec(data_dir / "kernels" / kernel, display)

    @staticmethod
    def _write_kernelspec(directory: Path, display: str) -> None:
        """Both kernel names run the server's own Python (numpy, pandas, xgboost, boto3, the SDK v2)."""
        directory.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [sys.executable, "-m", "sagestack.notebook_runtime.kernel", "-f", "{connection_file}"],
            "display_name": display,
            "language": "python",
            "metadata": {"debugger": True},
        }
        (directory / "kernel.json").write_text(json.dumps(spec, indent=1))

    def _environment(self, row: NotebookInstance, home: Path, runtime: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        threads = str(min(instance_vcpus(row.settings["InstanceType"]), os.cpu_count() or 1))
        env.update({
            "HOME": str(home),
            "SHELL": "/bin/bash",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(SITE_DIR),
            "PYTHONUNBUFFERED": "1",
            "JUPYTER_CONFIG_DIR": str(runtime / "jupyter"),
            "JUPYTER_DATA_DIR": str(home / ".local" / "share" / "jupyter"),
            "JUPYTER_RUNTIME_DIR": str(runtime / "jupyter-runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_PREFER_ENV_PATH": "0",  # the instance's kernelspecs (and the user's) before the venv's
            "AWS_ENDPOINT_URL": self.server_url,
            **({"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.platform.runtime_url} if self.platform.runtime_url else {}),
            "AWS_DEFAULT_REGION": self.settings.region,
            "AWS_REGION": self.settings.region,
            "AWS_CONFIG_FILE": str(runtime / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(runtime / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(runtime / "sagemaker-config.yaml"),
            "SAGESTACK_NOTEBOOK_METADATA_FILE": str(runtime / "resource-metadata.json"),
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",  # v2 is what the platform ships on purpose
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "NUMEXPR_MAX_THREADS": threads,
        })
        ca_bundle = self._ca_bundle()
        if ca_bundle:
            env["AWS_CA_BUNDLE"] = ca_bundle
        return env

    def _ca_bundle(self) -> str | None:
        if not self.settings.tls or self.settings.tls_cert is not None:
            return None  # plain HTTP, or a certificate of the operator's that the system trusts
        return str(self.settings.tls_dir / "ca.pem")

    # ------------------------------------------------------------ credentials
    def _issue_credentials(self, name: str, role_arn: str, runtime: Path, slot: _Slot) -> None:
        """A fresh STS session of the role, written where credential_process reads it."""
        if slot.role is None or slot.role.role_arn != role_arn or slot.role.directory != runtime:
            slot.role = RoleSession(self.db, role_arn, runtime, self.credential_seconds, self.settings.region)
        try:
            key = slot.role.issue()
        except RoleGone as gone:
            raise LaunchFailed(f"ClientError: {gone}") from None
        now = utcnow()
        with self.db.transaction() as session:
            # Kept on the row too: after a crash, recovery revokes what the dead processes held.
            row = session.get(NotebookInstance, name)
            if row is not None:
                live_keys = set(session.scalars(select(SessionCredential.access_key_id).where(
                    SessionCredential.access_key_id.in_(row.session_keys), SessionCredential.expiration > now)))
                row.session_keys = [k for k in row.session_keys if k in live_keys] + [key]

    def _revoke_credentials(self, name: str) -> None:
        with self.db.transaction() as session:
            row = session.get(NotebookInstance, name)
            keys = list(row.session_keys) if row is not None else []
            if keys:
                session.execute(delete(SessionCredential).where(SessionCredential.access_key_id.in_(keys)))
                row.session_keys = []
        for key in keys:
            self.platform.credentials.invalidate(key)

    async def _renew_forever(self) -> None:
        """Renew every running instance's session when half of it is left."""
        while True:
            await asyncio.sleep(min(30.0, self.credential_seconds / 4))
            for name, slot in list(self._slots.items()):
                if slot.live is not None and slot.role is not None and slot.role.due():
                    await asyncio.to_thread(self._renew, name)

    def _renew(self, name: str) -> None:
        slot = self._slot(name)
        if not slot.lock.acquire(blocking=False):
            return  # a start or stop is under way: it issues or revokes credentials itself
        try:
            row = self._load(name)
            if slot.live is None or row is None:
                return
            self._issue_credentials(name, row.settings["RoleArn"], self.instance_dir(name) / ".sagestack", slot)
        except LaunchFailed as failure:
            log.warning("notebook instance %s: credentials not renewed: %s", name, failure)
        finally:
            slot.lock.release()

    # ------------------------------------------------------------ memory
    def _memory_limit(self, row: NotebookInstance) -> int:
        return self.memory_override_mib or instance_memory_mib(row.settings["InstanceType"])

    async def _watch_memory_forever(self) -> None:
        """The instance type's memory as a limit: over it, the largest kernel dies, as the OOM killer would."""
        while True:
            await asyncio.sleep(MEMORY_CHECK_SECONDS)
            for live in [slot.live for slot in list(self._slots.values()) if slot.live is not None]:
                await asyncio.to_thread(self._enforce_memory, live)

    def _enforce_memory(self, live: Live) -> None:
        try:
            root = psutil.Process(live.process.pid)
            rss = {p.pid: p.memory_info().rss for p in (root, *root.children(recursive=True))}
        except psutil.Error:
            return
        victim = memory_victim(rss, root.pid, live.memory_mib * 2**20)
        if victim is None:
            return
        try:
            psutil.Process(victim).kill()
        except psutil.Error:
            return
        message = (f"sagestack: out of memory: process {victim} killed, the instance used "
                   f"{sum(rss.values()) / 2**20:.0f} MiB of its {live.memory_mib} MiB")
        log.warning("notebook instance %s: %s", live.name, message)
        append_events(self.db, LOG_GROUP, f"{live.name}/jupyter.log", [(int(time.time() * 1000), message)])

    # ------------------------------------------------------------ lifecycle scripts
    def _lifecycle_config(self, name: str | None) -> NotebookLifecycleConfig | None:
        if not name:
            return None
        with self.db.session() as session:
            config = session.get(NotebookLifecycleConfig, name)
            if config is None:
                raise LaunchFailed(f"ClientError: the lifecycle configuration {name} no longer exists.")
            session.expunge(config)
            return config

    def _run_script(self, name: str, instance_arn: str, config: NotebookLifecycleConfig, hook: str,
                    home: Path, env: dict[str, str], slot: _Slot) -> None:
        """Run one hook with bash, its output in ``<name>/LifecycleConfig<hook>``; fail the start if it fails."""
        hooks = config.on_create if hook == "OnCreate" else config.on_start
        if not hooks or not hooks[0].get("Content"):
            return
        script = home / ".sagestack" / f"{hook}.sh"
        script.write_bytes(base64.b64decode(hooks[0]["Content"]))
        stream = f"{name}/LifecycleConfig{hook}"
        ensure_log_stream(self.db, LOG_GROUP, stream)
        process = self._spawn(InstanceSpec(
            name=f"{name}/{hook}", argv=["/bin/bash", str(script)], env=env, cwd=home,
            on_output=lambda batch: append_events(self.db, LOG_GROUP, stream, batch),
        ))
        slot.scripts.append(process)
        code = process.wait(self.lifecycle_timeout)
        if code is None:
            process.kill()
            process.wait(10)
            raise LaunchFailed(lifecycle_reason(config.arn, instance_arn, timed_out=True))
        if code != 0:
            raise LaunchFailed(lifecycle_reason(config.arn, instance_arn, timed_out=False))

    # ------------------------------------------------------------ Jupyter
    def _start_jupyter(self, row: NotebookInstance, home: Path, runtime: Path, env: dict[str, str]) -> Live:
        """Start JupyterLab and wait until it answers; one retry if its port was taken in between."""
        for attempt in (1, 2):
            port, token = free_port(), secrets.token_urlsafe(32)
            self._write_jupyter_config(row.name, home, runtime, port, token)
            stream = f"{row.name}/jupyter.log"
            ensure_log_stream(self.db, LOG_GROUP, stream)
            argv = [sys.executable, "-m", "jupyterlab"]
            process = self._spawn(InstanceSpec(
                name=f"{row.name}/jupyter", argv=argv, env=env, cwd=home / "SageMaker",
                on_output=lambda batch, s=stream: append_events(self.db, LOG_GROUP, s, batch),
            ))
            self._limit_cpus(process.pid, row.name, row.settings["InstanceType"])
            live = Live(row.name, port, token, instance_stamp(row.created), process, self._memory_limit(row))
            if self._wait_ready(live):
                return live
            process.kill()
            process.wait(10)
            if attempt == 2:
                raise LaunchFailed("InternalServerError: the Jupyter server did not start; see the log stream "
                                   f"{LOG_GROUP} {stream}.")
        raise AssertionError("unreachable")

    @staticmethod
    def _write_jupyter_config(name: str, home: Path, runtime: Path, port: int, token: str) -> None:
        config = {
            "ServerApp": {
                "ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False,
                "base_url": f"{PROXY_PREFIX}/{name}/", "root_dir": str(home / "SageMaker"),
                # The proxy authenticates and strips Host/Origin; Jupyter sees a local client.
                "allow_root": True, "allow_remote_access": False,
            },
            "IdentityProvider": {"token": token},
            "KernelSpecManager": {"ensure_native_kernel": False},
            "MappingKernelManager": {"default_kernel_name": KERNEL_NAME},
            # No calls out of the machine: no news feed, no update check, no PyPI extension manager.
            "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                       "extension_manager": "readonly"},
        }
        write_private(runtime / "jupyter" / "jupyter_server_config.json", json.dumps(config, indent=1))

    def _wait_ready(self, live: Live) -> bool:
        url = f"http://127.0.0.1:{live.port}{live.base_url}api/status"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if live.process.poll() is not None:
                return False
            try:
                if self._http.get(url, headers={"Authorization": f"token {live.token}"}).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    @staticmethod
    def _limit_cpus(pid: int, name: str, instance_type: str) -> None:
        """As many CPUs as the instance type has vCPUs (inherited by the kernels); spread by name."""
        cpus = sorted(os.sched_getaffinity(0))
        count = min(instance_vcpus(instance_type), len(cpus))
        offset = sum(name.encode()) % len(cpus)
        chosen = {cpus[(offset + i) % len(cpus)] for i in range(count)}
        try:
            os.sched_setaffinity(pid, chosen)
        except OSError:
            pass

    def _spawn(self, spec: InstanceSpec) -> LocalInstance:
        return self.backend.start(spec)

    # ------------------------------------------------------------ stop and delete
    def _stop(self, name: str) -> None:
        slot = self._slot(name)
        with slot.lock:
            self._end_processes(name)
            self._revoke_credentials(name)
            self._update(name, expect="Stopping", status="Stopped", port=None)

    def _delete(self, name: str) -> None:
        slot = self._slot(name)
        with slot.lock:
            self._end_processes(name)
            self._revoke_credentials(name)
            shutil.rmtree(self.instance_dir(name), ignore_errors=True)
            with self.db.transaction() as session:
                row = session.get(NotebookInstance, name)
                if row is not None:
                    drop_tags(session, row.arn)
                    session.delete(row)
        with self._slots_lock:
            self._slots.pop(name, None)

    def _end_processes(self, name: str, grace: float = STOP_GRACE_SECONDS) -> None:
        """Jupyter shuts its kernels down on SIGTERM; whatever of its tree is left then gets SIGKILL."""
        slot = self._slot(name)
        processes = ([slot.live.process] if slot.live is not None else []) + slot.scripts
        tree: list[psutil.Process] = []
        for process in processes:
            try:
                tree.extend(psutil.Process(process.pid).children(recursive=True))
            except psutil.Error:
                pass
            process.terminate()
        for process in processes:
            if process.wait(grace) is None:
                process.kill()
                process.wait(5)
        for child in tree:
            try:
                child.kill()
            except psutil.Error:
                pass
        for script in slot.scripts:
            _kill_group(script.pid)  # what a lifecycle script left running in the background (nohup ... &)
        slot.live = None
        slot.scripts.clear()

    def _fail(self, name: str, reason: str) -> None:
        self._end_processes(name, grace=3.0)
        self._revoke_credentials(name)
        self._update(name, status="Failed", failure_reason=reason, port=None)

    # ------------------------------------------------------------ rows
    def _load(self, name: str) -> NotebookInstance | None:
        with self.db.session() as session:
            row = session.get(NotebookInstance, name)
            if row is not None:
                session.expunge(row)
            return row

    def _update(self, name: str, expect: str | None = None, **values: Any) -> bool:
        with self.db.transaction() as session:
            row = session.get(NotebookInstance, name)
            if row is None or (expect is not None and row.status != expect):
                return False
            for key, value in values.items():
                setattr(row, key, value)
            if "status" in values:
                row.last_modified = utcnow()
            return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


