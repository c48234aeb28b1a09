"""Run batch transform jobs: model servers on the job's instances, every input object through them.

Input objects are spread over the instances; each object is split into
records (SplitType), grouped into requests (BatchStrategy, MaxPayloadInMB),
filtered (InputFilter), sent to ``/invocations``, joined (JoinSource) and
filtered again (OutputFilter), then written to ``<S3OutputPath>/<input>.out``.
A request the model rejects fails the job, naming the file and the line.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.compute import LocalBackend
from sagestack.control import records as rec
from sagestack.control.inputs import check_output_bucket, resolve_source
from sagestack.control.model_servers import (
    DeployError,
    ModelServer,
    fetch_model,
    launch_model_server,
    may_write_logs,
    role_environment,
)
from sagestack.control.role_sessions import CREDENTIAL_SECONDS, RoleGone, RoleSession
from sagestack.db.base import utcnow
from sagestack.db.models.hosting import Model
from sagestack.db.models.transform import TransformJob
from sagestack.platform import Platform
from sagestack.serving.upstream import UpstreamError
from sagestack.storage import files
from sagestack.storage.api import ObjectMeta

log = logging.getLogger("sagestack.transform")
LOG_GROUP = "/aws/sagemaker/TransformJobs"


class TransformFailed(Exception):
    """Ends the job as Failed with this message as FailureReason."""


@dataclass
class _Run:
    name: str
    stop: threading.Event = field(default_factory=threading.Event)
    servers: list[ModelServer] = field(default_factory=list)
    #: The object store as the model's execution role may use it (set once the model is known).
    store: Any = None
    #: The STS session of that role its model servers hold.
    role: Any = None


class TransformController:
    def __init__(self, platform: Platform, backend: LocalBackend | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        self.backend = backend or LocalBackend()
        self.root: Path = platform.settings.data_dir / "transform"
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> Any:
        return self.platform.storage

    def recover(self) -> int:
        now = utcnow()
        ended = 0
        with self.db.transaction() as session:
            for job in session.query(TransformJob).filter(TransformJob.status.in_(("InProgress", "Stopping"))):
                stopped = job.status == "Stopping"
                job.status = "Stopped" if stopped else "Failed"
                if not stopped:
                    job.failure_reason = "InternalServerError: the sagestack server restarted while the job ran."
                job.ended = job.last_modified = now
                ended += 1
        return ended

    def check_inputs(self, request: dict[str, Any]) -> None:
        with self.db.session() as session:
            model = session.get(Model, request["ModelName"])
            role = model.request.get("ExecutionRoleArn") if model is not None else None
        # Probed as the model's role would list them: what exists under a prefix is its business alone.
        as_role = self.platform.storage_as(role) if role else self.store
        resolve_source(as_role, request["TransformInput"]["DataSource"]["S3DataSource"], probe=True)
        check_output_bucket(self.store, request["TransformOutput"]["S3OutputPath"], "TransformOutput.S3OutputPath")

    def submit(self, name: str) -> None:
        run = _Run(name)
        with self._lock:
            self._runs[name] = run
        threading.Thread(target=self._run, args=(run,), name=f"transform:{name}", daemon=True).start()

    def stop(self, name: str) -> None:
        with self._lock:
            run = self._runs.get(name)
        if run is not None:
            run.stop.set()

    # ------------------------------------------------------------ the run
    def _run(self, run: _Run) -> None:
        status, reason = "Completed", None
        try:
            request = self._start(run)
            asyncio.run(self._transform_all(run, request))
            if run.stop.is_set():
                status = "Stopped"
        except TransformFailed as exc:
            status, reason = "Failed", str(exc)
        except (DeployError, AwsError) as exc:
            status, reason = "Failed", f"ClientError: {getattr(exc, 'message', exc)}"
        except Exception as exc:
            log.exception("transform job %s failed inside sagestack", run.name)
            status, reason = "Failed", f"InternalServerError: {type(exc).__name__}: {exc}"
        finally:
            for server in run.servers:
                server.stop()
            if run.role is not None:
                run.role.revoke(self.platform.credentials)
            shutil.rmtree(self.root / run.name, ignore_errors=True)
            self._finish(run, status, reason)

    def _start(self, run: _Run) -> dict[str, Any]:
        with self.db.transaction() as session:
            job = session.get(TransformJob, run.name)
            job.started = job.last_modified = utcnow()
            request = dict(job.request)
            model = session.get(Model, request["ModelName"])
            if model is None:
                raise TransformFailed(f"ClientError: the model {request['ModelName']} no longer exists.")
            container = model.request.get("PrimaryContainer") or model.request["Containers"][0]
            role = model.request.get("ExecutionRoleArn")
        if not role:
            raise TransformFailed(f"ClientError: the model {request['ModelName']} has no ExecutionRoleArn: the job "
                                  "reads and writes S3 as that role.")
        run.store = self.platform.storage_as(role)  # a transform job works as its model's role
        model_dir = self.root / run.name / "model"
        fetch_model(run.store, container["ModelDataUrl"], model_dir)
        log_group = LOG_GROUP if may_write_logs(self.platform, role, LOG_GROUP) else None
        run.role = RoleSession(self.db, role, self.root / run.name / ".credentials", CREDENTIAL_SECONDS,
                               self.platform.region)
        try:
            run.role.issue()  # a transform job is short: one session, revoked when it ends
        except RoleGone as gone:
            raise TransformFailed(f"ClientError: {gone}") from None
        environment = {**(container.get("Environment") or {}), **(request.get("Environment") or {})}
        environment.update({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(request["MaxPayloadInMB"])})
        for _ in range(request["TransformResources"]["InstanceCount"]):
            stream = f"{run.name}/i-{secrets.token_hex(8)}"
            run.servers.append(launch_model_server(self.backend, self.db, model_dir, environment,
                                                   log_group=log_group, log_stream=stream,
                                                   data_dir=self.platform.settings.data_dir,
                                                   extra_env=role_environment(self.platform, run.role)))
        for server in run.servers:
            try:
                server.await_ready()
            except DeployError as exc:
                raise TransformFailed(f"ClientError: the model server did not start: {exc}") from exc
        return request

    async def _transform_all(self, run: _Run, request: dict[str, Any]) -> None:
        sources = resolve_source(run.store, request["TransformInput"]["DataSource"]["S3DataSource"])
        queue: asyncio.Queue[tuple[Any, str]] = asyncio.Queue()
        for item in sources:
            queue.put_nowait(item)
        concurrency = max(1, min(request["MaxConcurrentTransforms"], len(sources)))
        workers = [self._worker(run, request, queue, run.servers[i % len(run.servers)]) for i in range(concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for server in run.servers:
                server.pool.close()  # on this loop, before asyncio.run closes it

    async def _worker(self, run: _Run, request: dict[str, Any], queue: asyncio.Queue[tuple[Any, str]],
                      server: ModelServer) -> None:
        while not queue.empty() and not run.stop.is_set():
            info, relative = queue.get_nowait()
            output = await self._transform_object(run, request, info, server)
            if run.stop.is_set():
                return
            await asyncio.to_thread(self._write_output, run.store, request, relative, output)

    async def _transform_object(self, run: _Run, request: dict[str, Any], info: Any, server: ModelServer) -> bytes:
        transform_input = request["TransformInput"]
        content_type = transform_input.get("ContentType")
        processing = request.get("DataProcessing") or {}
        raw = await asyncio.to_thread(self._read, run.store, info, transform_input["CompressionType"])
        if transform_input["SplitType"] == "None":
            groups = [[(1, raw)]]
        else:
            groups = list(rec.batches(rec.lines(iter([raw])), request["MaxPayloadInMB"] * 1024 * 1024,
                                      request["BatchStrategy"] == "MultiRecord"))
        outputs: list[bytes] = []
        for group in groups:
            if run.stop.is_set():
                break
            outputs.extend(await self._invoke(server, request, info, group, processing, content_type))
        joiner = b"\n" if request["TransformOutput"].get("AssembleWith") == "Line" else b""
        body = joiner.join(outputs)
        if joiner and body and not body.endswith(b"\n"):
            body += b"\n"
        return body

    async def _invoke(self, server: ModelServer, request: dict[str, Any], info: Any, group: list[tuple[int, bytes]],
                      processing: dict[str, Any], content_type: str | None) -> list[bytes]:
        filtered = [rec.filter_record(r, processing.get("InputFilter"), content_type) for _, r in group]
        headers = {"Content-Type": content_type or "application/octet-stream",
                   "Accept": request["TransformOutput"].get("Accept") or "text/csv"}
        body = b"\n".join(filtered) if len(filtered) > 1 else filtered[0]
        try:
            response = await server.pool.request("POST", "/invocations", headers, body)
        except UpstreamError as exc:
            raise TransformFailed(f"AlgorithmError: the model server stopped answering: {exc}") from exc
        if response.status >= 400:
            raise TransformFailed(await self._locate_failure(server, headers, info, group, filtered, response))
        join = processing.get("JoinSource") == "Input"
        output_filter = processing.get("OutputFilter")
        if not join and not output_filter:
            return [response.body]
        out_type = response.headers.get("content-type", headers["Accept"])
        pieces = response.body.decode().splitlines() if len(group) > 1 else [response.body.decode()]
        if len(pieces) != len(group):
            raise TransformFailed(f"ClientError: JoinSource needs one output record per input record; "
                                  f"s3://{info.bucket}/{info.key} gave {len(pieces)} for {len(group)}.")
        results = []
        for (_, source), piece in zip(group, pieces, strict=True):
            joined = rec.join_records(source, piece.encode(), content_type) if join else piece.encode()
            results.append(rec.filter_record(joined, output_filter, content_type if join else out_type))
        return [b"\n".join(results) + b"\n"]

    async def _locate_failure(self, server: ModelServer, headers: dict[str, str], info: Any,
                              group: list[tuple[int, bytes]], filtered: list[bytes], first: Any) -> str:
        """Find the first record the model rejects, so the reason names its line."""
        where = f"s3://{info.bucket}/{info.key}"
        if len(group) > 1:
            for (number, _), record in zip(group, filtered, strict=True):
                response = await server.pool.request("POST", "/invocations", headers, record)
                if response.status >= 400:
                    message = response.body.decode("utf-8", "replace").strip()
                    return f"ClientError: Bad input in {where} at line {number}: {message} ({response.status})"
        message = first.body.decode("utf-8", "replace").strip()
        return f"ClientError: Bad input in {where} at line {group[0][0]}: {message} ({first.status})"

    @staticmethod
    def _read(store: Any, info: Any, compression: str) -> bytes:
        body = store.open_object(info.bucket, info.key)
        data = b"".join(body.chunks)
        return gzip.decompress(data) if compression == "Gzip" else data

    @staticmethod
    def _write_output(store: Any, request: dict[str, Any], relative: str, body: bytes) -> None:
        bucket, prefix = files.parse_s3_uri(request["TransformOutput"]["S3OutputPath"])
        key = f"{prefix.rstrip('/')}/{relative}.out" if prefix.strip("/") else f"{relative}.out"
        writer = store.begin_write()
        writer.write(body)
        store.put_object(bucket, key, writer, ObjectMeta(
            content_type=request["TransformOutput"].get("Accept") or "text/csv"))

    def _finish(self, run: _Run, status: str, reason: str | None) -> None:
        with self.db.transaction() as session:
            job = session.get(TransformJob, run.name)
            if job is not None:
                if job.stop_requested:
                    status, reason = "Stopped", None
                job.status, job.failure_reason = status, reason
                job.ended = job.last_modified = utcnow()
        with self._lock:
            self._runs.pop(run.name, None)
