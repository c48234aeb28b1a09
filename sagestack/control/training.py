"""Run training jobs: Starting → Downloading → Training → Uploading → Completed / Failed / Stopped.

Each job runs on its own thread, which owns the job's row while it is
InProgress. Instances are processes of the compute backend working on an
``/opt/ml``-shaped directory under ``<data-dir>/jobs/<job>/<host>``; their
output becomes CloudWatch Logs events and, through the metric regexes,
CloudWatch metrics and ``FinalMetricDataList``.

Restart policy: instances die with the server (see compute/local.py). At the
next start every job left InProgress/Stopping is ended — Stopping ones as
Stopped, the others as Failed with a FailureReason saying the server
restarted — so no job stays InProgress without a live process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagestack.algorithms.catalog import resolve_image
from sagestack.aws.errors import AwsError
from sagestack.compute import InstanceSpec, LocalBackend, LocalInstance
from sagestack.control.debugging import JobDebugger
from sagestack.control.inputs import check_output_bucket, resolve_source
from sagestack.control.model_servers import may_write_logs, role_environment
from sagestack.control.role_sessions import CREDENTIAL_SECONDS, RoleGone, RoleSession
from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.logic.cloudwatch import put_datapoints
from sagestack.logic.logs import append_events, ensure_log_stream
from sagestack.logic.sagemaker.statuses import TERMINAL
from sagestack.logic.sagemaker.training import next_transitions
from sagestack.platform import Platform
from sagestack.storage import files

log = logging.getLogger("sagestack.training")

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
STOP_GRACE_SECONDS = 30.0

#: Modules a zygote preloads for each algorithm's entry point.
WARM_MODULES = {"sagestack.algorithms.xgboost.train": ("sagestack.algorithms.xgboost.trainer",
                                                        "sagestack.debugger.hook")}
#: Set before the preloaded native libraries load (see algorithms/xgboost/train.py).
WARM_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

MetricListener = Callable[[str, str, float, float], None]
FinishListener = Callable[[str, str], None]


class JobEnded(Exception):
    """Ends a run early with a terminal status and a reason."""

    def __init__(self, status: str, reason: str | None, secondary: str | None = None) -> None:
        super().__init__(reason or status)
        self.status = status
        self.reason = reason
        self.secondary = secondary or status


@dataclass
class Channel:
    name: str
    #: (object info, path relative to the channel directory)
    objects: list[tuple[Any, str]]
    distribution: str


@dataclass
class _Run:
    name: str
    stop: threading.Event = field(default_factory=threading.Event)
    instances: list[LocalInstance] = field(default_factory=list)
    #: Why the job was stopped, when a tuning job stopped it (FailureReason and StatusMessage).
    stop_reason: str | None = None
    #: The STS sessions of the job's role its processes hold.
    role: RoleSession | None = None


class TrainingController:
    def __init__(self, platform: Platform, backend: LocalBackend | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        self.backend = backend or LocalBackend()
        self.jobs_dir: Path = platform.settings.jobs_dir
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self.metric_listeners: list[MetricListener] = []
        self.finish_listeners: list[FinishListener] = []

    @property
    def store(self) -> Any:
        return self.platform.storage

    async def startup(self) -> None:
        """Warm the algorithm's zygote in the background: the first job then starts fast too."""

        def warm() -> None:
            for module, preload in WARM_MODULES.items():
                try:
                    self.backend.prewarm(module, preload, WARM_ENV)
                except Exception:
                    log.exception("could not prewarm %s", module)

        threading.Thread(target=warm, name="prewarm", daemon=True).start()

    # ------------------------------------------------------------ API side
    def recover(self) -> int:
        """End the jobs a previous server process left running (their instances died with it)."""
        now = utcnow()
        ended = 0
        with self.db.transaction() as session:
            for job in session.query(TrainingJob).filter(TrainingJob.status.in_(("InProgress", "Stopping"))):
                stopped = job.status == "Stopping" or job.stop_requested
                job.status = "Stopped" if stopped else "Failed"
                job.secondary_status = job.status
                if not stopped:
                    job.failure_reason = ("InternalServerError: the sagestack server restarted while the job "
                                          "was running; its instances were lost. Start the job again.")
                job.transitions = next_transitions(job.transitions, job.status,
                                                   job.failure_reason or "Training job stopped", now, end=True)
                job.training_end = job.training_end or now
                job.last_modified = now
                ended += 1
        return ended

    def check_inputs(self, request: dict[str, Any]) -> None:
        """Fail CreateTrainingJob early, as SageMaker does, when a channel or the output bucket is missing."""
        # The inputs are probed as the job's role would list them (what exists is its business alone);
        # the output bucket's existence is no secret (S3 answers 403, not 404, for another's bucket).
        as_role = self.platform.storage_as(request["RoleArn"])
        for channel in request.get("InputDataConfig", []):
            resolve_source(as_role, channel["DataSource"]["S3DataSource"], probe=True)
        check_output_bucket(self.store, request["OutputDataConfig"]["S3OutputPath"], "OutputDataConfig.S3OutputPath")

    def submit(self, name: str) -> None:
        run = _Run(name)
        with self._lock:
            self._runs[name] = run
        threading.Thread(target=self._run, args=(run,), name=f"job:{name}", daemon=True).start()

    def stop(self, name: str, reason: str | None = None) -> None:
        with self._lock:
            run = self._runs.get(name)
        if run is not None:
            run.stop_reason = reason
            run.stop.set()
            for instance in run.instances:
                instance.terminate()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    # ------------------------------------------------------------ the run
    def _run(self, run: _Run) -> None:
        status, reason, secondary = "Completed", None, "Completed"
        debugger: JobDebugger | None = None
        try:
            job = self._load(run.name)
            # Everything the job reads and writes, it does as its role: the platform only carries it out.
            store = self.platform.storage_as(job.request["RoleArn"])
            debugger = JobDebugger(self.db, store, job, self.jobs_dir / job.name)
            algorithm = resolve_image(job.request["AlgorithmSpecification"]["TrainingImage"])
            assert algorithm is not None  # checked by CreateTrainingJob
            hosts = [f"algo-{i}" for i in range(1, job.instance_count + 1)]
            self._check_stop(run)
            self._advance(run.name, "Downloading", "Downloading input data")
            self._prepare(job, hosts, store)
            run.role = self._role_session(job)
            self._check_stop(run)
            self._advance(run.name, "Training", "Training image download completed. Training in progress.",
                          training_start=True)
            self._train(run, job, hosts, algorithm.train_module, debugger)
            self._advance(run.name, "Uploading", "Uploading generated training model")
            artifacts = self._upload(job, hosts, store)
            self._update(run.name, model_artifacts=artifacts)
        except JobEnded as ended:
            status, reason, secondary = ended.status, ended.reason, ended.secondary
        except AwsError as error:
            status, reason, secondary = "Failed", f"ClientError: {error.message}", "Failed"
        except Exception as exc:  # a bug of ours must still end the job, never leave it InProgress
            log.exception("training job %s failed inside sagestack", run.name)
            status, reason, secondary = "Failed", f"InternalServerError: {type(exc).__name__}: {exc}", "Failed"
        finally:
            if debugger is not None:
                try:
                    debugger.finish(status)
                except Exception:
                    log.exception("debugger of %s failed", run.name)
            if run.role is not None:
                run.role.revoke(self.platform.credentials)  # the job's keys end with the job
            self._finish(run, status, reason, secondary)

    def _role_session(self, job: TrainingJob) -> RoleSession:
        """The STS session of the job's role its processes call AWS with (renewed while the job runs)."""
        role = RoleSession(self.db, job.request["RoleArn"], self.jobs_dir / job.name / ".credentials",
                           CREDENTIAL_SECONDS, self.platform.region)
        try:
            role.issue()
        except RoleGone as gone:
            raise JobEnded("Failed", f"ClientError: {gone}") from None
        return role

    def _check_stop(self, run: _Run) -> None:
        if run.stop.is_set():
            raise JobEnded("Stopped", None)

    # ------------------------------------------------------------ Downloading
    def _prepare(self, job: TrainingJob, hosts: list[str], store: Any) -> None:
        root = self.jobs_dir / job.name
        if root.exists():
            shutil.rmtree(root)
        channels = [self._channel(c, store) for c in job.request.get("InputDataConfig", [])]
        for index, host in enumerate(hosts):
            opt_ml = root / host
            config = opt_ml / "input" / "config"
            for sub in (config, opt_ml / "model", opt_ml / "output" / "data", opt_ml / "checkpoints"):
                sub.mkdir(parents=True, exist_ok=True)
            _write_json(config / "hyperparameters.json", job.request.get("HyperParameters", {}))
            _write_json(config / "inputdataconfig.json", _input_data_config(job.request))
            _write_json(config / "resourceconfig.json",
                        {"current_host": host, "hosts": hosts, "network_interface_name": "lo"})
            for extra in ("DebugHookConfig", "ProfilerConfig"):
                if extra in job.request:
                    _write_json(config / f"{extra.lower()}.json", job.request[extra])
            for channel in channels:
                self._place_channel(channel, opt_ml / "input" / "data" / channel.name, index, len(hosts), store)

    @staticmethod
    def _channel(channel: dict[str, Any], store: Any) -> Channel:
        s3 = channel["DataSource"]["S3DataSource"]
        return Channel(channel["ChannelName"], resolve_source(store, s3),
                       s3.get("S3DataDistributionType", "FullyReplicated"))

    @staticmethod
    def _place_channel(channel: Channel, dest: Path, host_index: int, host_count: int, store: Any) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for position, (info, relative) in enumerate(channel.objects):
            if channel.distribution == "ShardedByS3Key" and position % host_count != host_index:
                continue
            try:
                files.fetch(store, info, dest / relative)
            except AwsError as error:
                raise AwsError(error.code, f"Data download failed:Could not download s3://{info.bucket}/{info.key}: "
                                           f"{error.code} ({error.status}): {error.message}", error.status) from error

    # ------------------------------------------------------------ Training
    def _train(self, run: _Run, job: TrainingJob, hosts: list[str], module: str, debugger: JobDebugger) -> None:
        epoch = int(time.time())
        tracker_port = _free_port_pair() if len(hosts) > 1 else None
        metrics = _MetricParser(job.request["AlgorithmSpecification"].get("MetricDefinitions", []))
        # Logs and metrics are written for the job's role, so only where the role itself may write them.
        role = job.request["RoleArn"]
        writes_logs = may_write_logs(self.platform, role, LOG_GROUP)
        writes_metrics = self.platform.role_may(role, "cloudwatch:PutMetricData", "*",
                                                {"cloudwatch:namespace": METRIC_NAMESPACE})
        for host in hosts:
            stream = f"{job.name}/{host}-{epoch}"
            if writes_logs:
                ensure_log_stream(self.db, LOG_GROUP, stream)
            spec = InstanceSpec(
                name=f"{job.name}/{host}",
                argv=[sys.executable, "-m", module],
                env={**self._instance_env(job, host, tracker_port, run.role), **debugger.env()},
                cwd=self.jobs_dir / job.name / host,
                on_output=self._sink(job.name, stream if writes_logs else None,
                                     metrics if host == hosts[0] else None, writes_metrics),
                # Forked from a warm interpreter: imports cost more than a whole tutorial job.
                module=module,
                warm=WARM_MODULES.get(module, ()),
                warm_env=WARM_ENV,
            )
            run.instances.append(self.backend.start(spec))
        pairs = zip(hosts, run.instances, strict=True)
        debugger.start([(host, lambda i=instance: [i.pid]) for host, instance in pairs])
        self._wait(run, job, hosts)

    def _instance_env(self, job: TrainingJob, host: str, tracker_port: int | None,
                      role: RoleSession | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGESTACK_"))}
        env.update(role_environment(self.platform, role))  # the job's code calls AWS as its role, here
        env.update(job.request.get("Environment", {}))
        env.update({
            "SM_OPT_ML": str(self.jobs_dir / job.name / host),
            "SM_CURRENT_HOST": host,
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
            "PYTHONUNBUFFERED": "1",
        })
        if tracker_port is not None:
            env["SAGESTACK_TRACKER_HOST"] = "127.0.0.1"
            env["SAGESTACK_TRACKER_PORT"] = str(tracker_port)
        return env

    def _sink(self, job_name: str, stream: str | None, metrics: _MetricParser | None,
              to_cloudwatch: bool) -> Callable[..., None]:
        def deliver(batch: list[tuple[int, str]]) -> None:
            if stream is not None:
                append_events(self.db, LOG_GROUP, stream, batch)
            if metrics is not None:
                self._publish_metrics(job_name, metrics.parse(batch), to_cloudwatch)

        return deliver

    def _publish_metrics(self, job_name: str, values: dict[str, list[tuple[int, float]]],
                         to_cloudwatch: bool = True) -> None:
        """CloudWatch gets the datapoints when the role may put them; the job's own final metrics
        (DescribeTrainingJob, the tuner) are SageMaker's and are kept either way."""
        if not values:
            return
        for metric, points in values.items():
            if to_cloudwatch:
                put_datapoints(self.db, METRIC_NAMESPACE, metric, {"TrainingJobName": job_name}, points)
            for when_ms, value in points:
                for listener in self.metric_listeners:
                    listener(job_name, metric, value, when_ms / 1000)
        with self.db.transaction() as session:
            job = session.get(TrainingJob, job_name)
            if job is not None:
                final = dict(job.final_metrics)
                for metric, points in values.items():
                    when_ms, value = points[-1]
                    final[metric] = [value, when_ms / 1000]
                job.final_metrics = final

    def _wait(self, run: _Run, job: TrainingJob, hosts: list[str]) -> None:
        limit = job.request["StoppingCondition"].get("MaxRuntimeInSeconds", 86400)
        deadline = time.monotonic() + limit
        while True:
            codes = [instance.poll() for instance in run.instances]
            failed = [(h, c) for h, c in zip(hosts, codes, strict=True) if c not in (None, 0)]
            if failed and not run.stop.is_set():
                self._terminate_all(run)
                host, code = failed[0]
                raise JobEnded("Failed", self._failure_reason(job, host, code))
            if all(code is not None for code in codes):
                for instance in run.instances:
                    instance.wait(5)  # joins the output pump: every metric is delivered before the job ends
                if run.stop.is_set():
                    raise JobEnded("Stopped", None)
                return
            if run.role is not None and run.role.due():
                self._renew(run)
            if run.stop.is_set():
                self._terminate_all(run)
            elif time.monotonic() > deadline:
                self._terminate_all(run)
                raise JobEnded("Stopped", "MaxRuntimeExceeded: Training job runtime exceeded "
                                          f"MaxRuntimeInSeconds provided ({limit} s).", "MaxRuntimeExceeded")
            time.sleep(0.05)

    def _renew(self, run: _Run) -> None:
        assert run.role is not None
        try:
            run.role.issue()
        except RoleGone as gone:  # deleted while the job runs: it has no credentials, and says why
            self._terminate_all(run)
            raise JobEnded("Failed", f"ClientError: {gone}") from None

    def _terminate_all(self, run: _Run) -> None:
        for instance in run.instances:
            instance.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for instance in run.instances:
            if instance.wait(max(0.0, deadline - time.monotonic())) is None:
                instance.kill()
                instance.wait(10)

    def _failure_reason(self, job: TrainingJob, host: str, code: int) -> str:
        failure = self.jobs_dir / job.name / host / "output" / "failure"
        text = failure.read_text(errors="replace").strip() if failure.exists() else ""
        if text:
            return text if re.match(r"^\w+Error:", text) else f"AlgorithmError: {text}"
        if code in (-9, 137):
            return ("OutOfMemoryError: the training process was killed (SIGKILL), most likely because it "
                    "ran out of memory. Use an instance type with more memory or train on less data.")
        return (f"AlgorithmError: the training process on {host} exited with code {code}. "
                f"See the log stream {job.name}/{host}-* in {LOG_GROUP}.")

    # ------------------------------------------------------------ Uploading
    def _upload(self, job: TrainingJob, hosts: list[str], store: Any) -> str:
        output = job.request["OutputDataConfig"]
        bucket, prefix = files.parse_s3_uri(output["S3OutputPath"])
        base = f"{prefix.rstrip('/')}/{job.name}/output" if prefix.strip("/") else f"{job.name}/output"
        opt_ml = self.jobs_dir / job.name / hosts[0]
        model_key = f"{base}/model.tar.gz"
        # Like SageMaker, every host's model/ goes into the one archive (the master may not be algo-1).
        _tar([self.jobs_dir / job.name / host / "model" for host in hosts], opt_ml / "model.tar.gz")
        _upload_artifact(store, opt_ml / "model.tar.gz", bucket, model_key)
        data_dir = opt_ml / "output" / "data"
        if any(data_dir.iterdir()):
            _tar([data_dir], opt_ml / "output.tar.gz")
            _upload_artifact(store, opt_ml / "output.tar.gz", bucket, f"{base}/output.tar.gz")
        return f"s3://{bucket}/{model_key}"

    # ------------------------------------------------------------ state
    def _load(self, name: str) -> TrainingJob:
        with self.db.session() as session:
            job = session.get(TrainingJob, name)
            if job is None:
                raise JobEnded("Failed", "InternalServerError: the job row disappeared")
            return job

    def _update(self, name: str, **fields: Any) -> None:
        with self.db.transaction() as session:
            job = session.get(TrainingJob, name)
            for key, value in fields.items():
                setattr(job, key, value)
            job.last_modified = utcnow()

    def _advance(self, name: str, status: str, message: str, training_start: bool = False) -> None:
        now = utcnow()
        with self.db.transaction() as session:
            job = session.get(TrainingJob, name)
            if job.status != "InProgress":
                return
            job.secondary_status = status
            job.transitions = next_transitions(job.transitions, status, message, now)
            if training_start:
                job.training_start = now
            job.last_modified = now

    def _finish(self, run: _Run, status: str, reason: str | None, secondary: str) -> None:
        now = utcnow()
        messages = {"Completed": "Training job completed", "Stopped": "Training job stopped"}
        if status == "Stopped" and reason is None:
            reason = run.stop_reason
        with self.db.transaction() as session:
            job = session.get(TrainingJob, run.name)
            if job is not None and job.status not in TERMINAL:
                if job.stop_requested and status == "Failed":
                    status, secondary = "Stopped", "Stopped"
                job.status = status
                job.secondary_status = secondary
                job.failure_reason = reason
                job.transitions = next_transitions(job.transitions, secondary,
                                                   reason or messages.get(status, status), now, end=True)
                job.training_end = now
                job.last_modified = now
        with self._lock:
            self._runs.pop(run.name, None)
        for listener in self.finish_listeners:
            try:
                listener(run.name, status)
            except Exception:
                log.exception("finish listener failed for %s", run.name)


class _MetricParser:
    """Turns log lines into metric values with the job's MetricDefinitions regexes."""

    def __init__(self, definitions: list[dict[str, str]]) -> None:
        self.patterns = []
        for definition in definitions:
            try:
                self.patterns.append((definition["Name"], re.compile(definition["Regex"])))
            except (re.error, KeyError):
                log.warning("skipping unusable metric definition %s", definition)

    def parse(self, batch: list[tuple[int, str]]) -> dict[str, list[tuple[int, float]]]:
        values: dict[str, list[tuple[int, float]]] = {}
        for when, line in batch:
            for name, pattern in self.patterns:
                match = pattern.search(line)
                if match is None:
                    continue
                try:
                    value = float(match.group(1))
                except (IndexError, ValueError):
                    continue
                values.setdefault(name, []).append((when, value))
        return values


def _input_data_config(request: dict[str, Any]) -> dict[str, Any]:
    mode = request["AlgorithmSpecification"].get("TrainingInputMode", "File")
    config = {}
    for channel in request.get("InputDataConfig", []):
        entry = {
            "TrainingInputMode": "File" if channel.get("InputMode", mode) == "FastFile" else
            channel.get("InputMode", mode),
            "S3DistributionType": channel["DataSource"]["S3DataSource"].get("S3DataDistributionType",
                                                                              "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
        if channel.get("ContentType"):
            entry["ContentType"] = channel["ContentType"]
        config[channel["ChannelName"]] = entry
    return config


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def _upload_artifact(store: Any, path: Path, bucket: str, key: str) -> None:
    try:
        files.upload(store, path, bucket, key, "application/x-tar")
    except AwsError as error:
        raise AwsError(error.code, f"Failed to upload the training artifacts to s3://{bucket}/{key}: "
                                   f"{error.code} ({error.status}): {error.message}", error.status) from error


def _tar(sources: list[Path], target: Path) -> None:
    """``model.tar.gz`` holds the directories' files at its root, as SageMaker packs them."""
    seen: set[str] = set()
    with tarfile.open(target, "w:gz", compresslevel=6) as archive:
        for source in sources:
            for path in sorted(source.rglob("*")) if source.is_dir() else []:
                name = path.relative_to(source).as_posix()
                if name not in seen:
                    seen.add(name)
                    archive.add(path, arcname=name, recursive=False)


def _free_port_pair() -> int:
    """A port P with P+1 free too: the collective's tracker may need a second round on P+1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                with socket.socket() as second:
                    second.bind(("127.0.0.1", port + 1))
                    return port
            except OSError:
                continue
    raise RuntimeError("no pair of free loopback ports")
