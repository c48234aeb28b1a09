"""Run hyperparameter tuning jobs: launch trials, feed their metrics to the tuner, stop, complete.

One reconcile thread serves every active tuning job. It wakes when a trial emits its
objective metric or ends (the training controller's listeners) and at least every
``RECONCILE_SECONDS``. Each pass follows :mod:`sagestack.tuning.tuner`'s contract: it
rebuilds a :class:`~sagestack.tuning.Tuner` from the persisted trials, stops the trials
it says to stop, and records each new suggestion as a trial row *before* creating its
training job.

Trials are ordinary training jobs named ``<tuning job>-<NNN>-<8 hex>`` (NNN: the 1-based
suggestion index). Their status, objective (the last value emitted, i.e. the training
job's final metric) and times are read from the training job row; the trial row adds
the hyperparameters, the per-epoch curve and why the tuning job stopped it.

Restart: the training controller ends the jobs a killed server left running as Failed
with an InternalServerError. Such a trial is a RetryableError: its suggestion is launched
again under a new name (same index, next attempt) up to ``MAX_ATTEMPTS`` times. A trial
row with no training job (a crash between the two writes) is launched under its
recorded name, so no suggestion runs twice and none is lost.
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from sagestack.algorithms.catalog import resolve_image
from sagestack.aws.errors import AwsError
from sagestack.control.training import TrainingController, next_transitions
from sagestack.db.base import utcnow
from sagestack.db.models.tags import ResourceTag
from sagestack.db.models.training import TrainingJob
from sagestack.db.models.tuning import TuningJob, TuningTrial
from sagestack.platform import Platform
from sagestack.tuning import Completion, TrialRecord, Tuner, parse_request

log = logging.getLogger("sagestack.tuning")

RECONCILE_SECONDS = 0.5
#: Launches of one suggestion whose training jobs keep failing with internal errors.
MAX_ATTEMPTS = 3
#: With no trial succeeding, this many failed trials (fewer if the budget is smaller) fail the tuning job.
FAIL_FAST_TRIALS = 3
ACTIVE = ("InProgress", "Stopping")
TERMINAL = ("Completed", "Failed", "Stopped")
#: Definition members a trial's CreateTrainingJob request takes over unchanged.
PASSED_THROUGH = ("InputDataConfig", "VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                  "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy", "Environment")


# -- reading the persisted state (shared with the API handlers) -----------------------------


def definition_of(request: dict[str, Any]) -> dict[str, Any]:
    """The one training job definition (TrainingJobDefinition or TrainingJobDefinitions[0])."""
    return request.get("TrainingJobDefinition") or (request.get("TrainingJobDefinitions") or [{}])[0]


def objective_of(request: dict[str, Any]) -> tuple[str, str]:
    """(MetricName, Type) of the tuning objective."""
    config, _ = parse_request(request)
    assert config is not None, "stored tuning requests were validated"
    return config.metric, "Maximize" if config.maximize else "Minimize"


@dataclass
class TrialView:
    """One training job of a tuning job: its trial row, its training job row (None before launch)."""

    row: TuningTrial
    job: TrainingJob | None
    metric: str
    #: The in-memory curve of a running trial (fresher than the row's).
    live_curve: list[float] | None = None

    @property
    def name(self) -> str:
        return self.row.training_job_name

    @property
    def index(self) -> int:
        return self.row.trial_index

    @property
    def status(self) -> str:
        if self.job is not None:
            return self.job.status
        if self.row.launch_error:
            return "Failed"
        return "Stopped" if self.row.stop_reason else "Pending"

    @property
    def running(self) -> bool:
        return self.status not in TERMINAL

    @property
    def failure_reason(self) -> str | None:
        if self.job is not None:
            return self.job.failure_reason
        return self.row.launch_error

    @property
    def curve(self) -> list[float]:
        stored = list(self.row.intermediate or [])
        if self.live_curve is not None and len(self.live_curve) >= len(stored):
            return list(self.live_curve)
        return stored

    @property
    def objective(self) -> float | None:
        """The last value emitted for the objective metric (SageMaker's "latest" semantics)."""
        final = (self.job.final_metrics or {}).get(self.metric) if self.job is not None else None
        if final:
            return float(final[0])
        curve = self.curve
        return curve[-1] if curve else None

    @property
    def error_kind(self) -> str | None:
        """RetryableError (our side failed) or NonRetryableError (the job's own problem), for Failed jobs."""
        if self.status != "Failed":
            return None
        internal = (self.failure_reason or "").startswith("InternalServerError")
        return "RetryableError" if internal else "NonRetryableError"

    @property
    def objective_status(self) -> str:
        if self.running:
            return "Pending"
        value = self.objective
        if self.status in ("Completed", "Stopped") and value is not None and math.isfinite(value):
            return "Succeeded"
        return "Failed"

    def record(self) -> TrialRecord:
        return TrialRecord(index=self.index, hyperparameters=dict(self.row.hyperparameters), status=self.status,
                           objective=self.objective, intermediate=tuple(self.curve), name=self.name)


def load_views(session: Any, job: TuningJob, curves: dict[str, list[float]] | None = None) -> list[TrialView]:
    """Every training job of ``job`` (all attempts), by suggestion index then attempt."""
    rows = list(session.scalars(select(TuningTrial).where(TuningTrial.tuning_job_name == job.name)))
    rows.sort(key=lambda r: (r.trial_index, r.attempt))
    jobs = {j.name: j for j in session.scalars(
        select(TrainingJob).where(TrainingJob.tuning_job_name == job.name))}
    metric, _ = objective_of(job.request)
    live = curves or {}
    return [TrialView(r, jobs.get(r.training_job_name), metric, live.get(r.training_job_name)) for r in rows]


def latest(views: Iterable[TrialView]) -> list[TrialView]:
    """The last attempt of each suggestion: what the tuner reasons about."""
    by_index: dict[int, TrialView] = {}
    for view in views:
        by_index[view.index] = view
    return [by_index[i] for i in sorted(by_index)]


def parent_views(session: Any, request: dict[str, Any]) -> list[TrialView]:
    """The warm-start parents' trials (last attempts), with which both strategies and ranking learn."""
    parents = (request.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs") or []
    views: list[TrialView] = []
    for parent in parents:
        row = session.get(TuningJob, parent["HyperParameterTuningJobName"])
        if row is not None:
            views += latest(load_views(session, row))
    return views


def build_tuner(request: dict[str, Any], views: Sequence[TrialView], parents: Sequence[TrialView]) -> Tuner:
    return Tuner(request, [v.record() for v in views], [p.record() for p in parents])


def status_counters(views: Iterable[TrialView]) -> dict[str, int]:
    counts = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    for view in views:
        key = view.error_kind or ("InProgress" if view.running else view.status)
        counts[key] += 1
    return counts


def objective_counters(views: Iterable[TrialView]) -> dict[str, int]:
    counts = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for view in views:
        counts[view.objective_status] += 1
    return counts


# -- building a trial's CreateTrainingJob request -------------------------------------------


def trial_name(tuning_job: str, index: int) -> str:
    return f"{tuning_job}-{index + 1:03d}-{secrets.token_hex(4)}"


def resource_config(definition: dict[str, Any]) -> dict[str, Any]:
    """ResourceConfig, or the HyperParameterTuningResourceConfig (its first InstanceConfig) the SDK sends."""
    if definition.get("ResourceConfig"):
        return copy.deepcopy(definition["ResourceConfig"])
    tuning = definition.get("HyperParameterTuningResourceConfig") or {}
    first = (tuning.get("InstanceConfigs") or [{}])[0]
    config = {key: tuning.get(key, first.get(key)) for key in ("InstanceType", "InstanceCount", "VolumeSizeInGB")}
    if tuning.get("VolumeKmsKeyId"):
        config["VolumeKmsKeyId"] = tuning["VolumeKmsKeyId"]
    return {key: value for key, value in config.items() if value is not None}


def _algorithm_specification(definition: dict[str, Any], metric: str) -> dict[str, Any]:
    spec = {k: copy.deepcopy(v) for k, v in definition["AlgorithmSpecification"].items() if k != "AlgorithmName"}
    declared = spec.get("MetricDefinitions")
    algorithm = resolve_image(spec.get("TrainingImage") or "")
    if declared and algorithm is not None and all(d.get("Name") != metric for d in declared):
        # Own metric definitions replace the built-in ones; the objective must still be parsed.
        spec["MetricDefinitions"] = declared + [d for d in algorithm.metric_definitions() if d["Name"] == metric]
    return spec


def trial_request(request: dict[str, Any], name: str, hyperparameters: dict[str, str],
                  tags: list[dict[str, str]]) -> dict[str, Any]:
    """The CreateTrainingJob parameters of one trial: the definition plus the suggested hyperparameters."""
    definition = definition_of(request)
    metric, _ = objective_of(request)
    params: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": _algorithm_specification(definition, metric),
        "RoleArn": definition["RoleArn"],
        "OutputDataConfig": copy.deepcopy(definition["OutputDataConfig"]),
        "ResourceConfig": resource_config(definition),
        "StoppingCondition": copy.deepcopy(definition["StoppingCondition"]),
        "HyperParameters": dict(hyperparameters),
    }
    params.update({key: copy.deepcopy(definition[key]) for key in PASSED_THROUGH if key in definition})
    if tags:
        params["Tags"] = [dict(t) for t in tags]  # the tuning job's tags go to every training job it launches
    return params


def tags_of(session: Any, arn: str) -> list[dict[str, str]]:
    rows = session.scalars(select(ResourceTag).where(ResourceTag.resource_arn == arn).order_by(ResourceTag.id))
    return [{"Key": row.key, "Value": row.value} for row in rows]


def _region(arn: str) -> str:
    return arn.split(":")[3]


# -- the controller --------------------------------------------------------------------------


class TuningController:
    def __init__(self, platform: Platform, training: TrainingController) -> None:
        self.platform = platform
        self.db = platform.db
        #: The concrete runner: tuning listens to its metrics and job ends.
        self.training = training
        self._lock = threading.Lock()
        self._active: set[str] = set()
        #: tuning job -> objective metric name, training job -> tuning job: what the listeners filter on.
        self._metrics: dict[str, str] = {}
        self._trials: dict[str, str] = {}
        self._curves: dict[str, list[float]] = {}
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.training.metric_listeners.append(self._on_metric)
        self.training.finish_listeners.append(self._on_finish)

    # ------------------------------------------------------------ lifecycle
    def recover(self) -> int:
        """Pick up the tuning jobs a previous server process left active; returns how many."""
        with self.db.session() as session:
            jobs = list(session.scalars(select(TuningJob).where(TuningJob.status.in_(ACTIVE))))
        for job in jobs:
            self.submit(job.name, job.request)
        return len(jobs)

    async def startup(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tuning-reconciler", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        self._closing.set()
        self._wake.set()

    def submit(self, name: str, request: dict[str, Any]) -> None:
        """Start reconciling tuning job ``name`` (already persisted)."""
        metric, _ = objective_of(request)
        with self._lock:
            self._active.add(name)
            self._metrics[name] = metric
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ listeners (training job threads)
    def _on_metric(self, job_name: str, metric: str, value: float, _when: float) -> None:
        with self._lock:
            tuning = self._trials.get(job_name)
            if tuning is None or self._metrics.get(tuning) != metric:
                return
            self._curves.setdefault(job_name, []).append(value)
        self._wake.set()

    def _on_finish(self, job_name: str, _status: str) -> None:
        with self._lock:
            ours = job_name in self._trials
        if ours:
            self._wake.set()

    # ------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(RECONCILE_SECONDS)
            self._wake.clear()
            with self._lock:
                names = sorted(self._active)
            for name in names:
                try:
                    self.reconcile(name)
                except Exception:  # one broken job must not stall the others
                    log.exception("reconciling tuning job %s failed", name)

    def reconcile(self, name: str) -> None:
        """One pass over tuning job ``name``; see the module docstring."""
        with self._lock:
            curves = {k: list(v) for k, v in self._curves.items()}
        with self.db.session() as session:
            job = session.get(TuningJob, name)
            if job is None or job.status not in ACTIVE:
                self._forget(name)
                return
            views = load_views(session, job, curves)
            parents = parent_views(session, job.request)
            tags = tags_of(session, job.arn)
        self._settle_finished(views)
        current = latest(views)
        if self._launch_orphans(job, current, tags):
            return
        if job.stop_requested or job.failure_reason:
            self._wind_down(job, current)
            return
        tuner = build_tuner(job.request, current, parents)
        self._early_stop(job, tuner, current)
        if self._fail_if_hopeless(job, current, tuner):
            return
        done = tuner.is_complete() or self._runtime_exceeded(job)
        if done is not None and done.stop_running:
            self._stop_all(current, f"Training job stopped because hyperparameter tuning job {name} met its "
                                    f"completion criterion {done.criterion} ({done.reason}).")
        elif self._retry(job, current, tuner, tags) or (done is None and self._launch_new(job, tuner, tags)):
            self._wake.set()  # the next pass sees the new trials as running
            return
        if done is not None and not any(v.running for v in current):
            self._complete(job, tuner, done, current)

    # ------------------------------------------------------------ pass steps
    def _settle_finished(self, views: Sequence[TrialView]) -> None:
        """Persist the curves of trials that ended and let go of their in-memory state."""
        finished = [v for v in views if not v.running and v.live_curve is not None]
        if not finished:
            return
        with self.db.transaction() as session:
            for view in finished:
                row = session.get(TuningTrial, view.name)
                if row is not None and len(view.live_curve or []) >= len(row.intermediate or []):
                    row.intermediate = list(view.live_curve or [])
        with self._lock:
            for view in finished:
                self._curves.pop(view.name, None)
                self._trials.pop(view.name, None)

    def _launch_orphans(self, job: TuningJob, views: Sequence[TrialView], tags: list[dict[str, str]]) -> bool:
        """Launch trial rows a crash left without a training job; True if there were any."""
        orphans = [v for v in views if v.status == "Pending"]
        for view in orphans:
            if job.stop_requested or job.failure_reason:
                self._update_trial(view.name, stop_reason="The tuning job ended before the trial was launched.")
            else:
                self._launch(job, view.row, tags)
        return bool(orphans)

    def _wind_down(self, job: TuningJob, views: Sequence[TrialView]) -> None:
        """Stopping or failing: stop the running trials, then end the tuning job."""
        running = [v for v in views if v.running]
        if job.stop_requested:
            reason = f"Training job stopped because hyperparameter tuning job {job.name} was stopped."
        else:
            reason = f"Training job stopped because hyperparameter tuning job {job.name} failed."
        self._stop_all(running, reason)
        if not running:
            self._end(job.name, "Stopped" if job.stop_requested else "Failed")

    def _early_stop(self, job: TuningJob, tuner: Tuner, views: Sequence[TrialView]) -> None:
        by_index = {v.index: v for v in views}
        hyperband = tuner.config.hyperband is not None
        for index, why in tuner.stop_decisions().items():
            view = by_index[index]
            if self._ends_on_its_own(view):
                continue
            kind = "early stopping (Hyperband)" if hyperband else "early stopping"
            self._stop_trial(view, f"Training job stopped by {kind} of hyperparameter tuning job {job.name}: "
                                   f"{why}.")

    @staticmethod
    def _ends_on_its_own(view: TrialView) -> bool:
        """An XGBoost job that already printed its last round: stopping it would only race its end."""
        rounds = view.row.hyperparameters.get("num_round")
        try:
            return rounds is not None and len(view.curve) >= int(float(rounds))
        except ValueError:
            return False

    def _fail_if_hopeless(self, job: TuningJob, views: Sequence[TrialView], tuner: Tuner) -> bool:
        """Fail the tuning job when its first trials all failed and none succeeded: nothing will."""
        if any(v.status == "Completed" or v.objective_status == "Succeeded" for v in views):
            return False
        failed = [v for v in views if v.status == "Failed" and not self._retryable(v)]
        if len(failed) < min(FAIL_FAST_TRIALS, tuner.max_jobs):
            return False
        first = failed[0]
        reason = (f"All of the first {len(failed)} training jobs failed and none succeeded, so the tuning job "
                  f"cannot find a best training job. First failure: {first.name}: {first.failure_reason}")
        self._set_job(job.name, failure_reason=reason[:1024])
        self._wake.set()
        return True

    @staticmethod
    def _retryable(view: TrialView) -> bool:
        return view.error_kind == "RetryableError" and view.row.attempt < MAX_ATTEMPTS

    def _runtime_exceeded(self, job: TuningJob) -> Completion | None:
        limit = (job.request["HyperParameterTuningJobConfig"].get("ResourceLimits") or {}).get("MaxRuntimeInSeconds")
        if limit is None or (utcnow() - job.created).total_seconds() < limit:
            return None
        return Completion("MaxRuntimeInSeconds", f"the tuning job ran for {limit} seconds", stop_running=True)

    def _retry(self, job: TuningJob, views: Sequence[TrialView], tuner: Tuner, tags: list[dict[str, str]]) -> bool:
        """Launch again the suggestions whose training jobs failed on our side (e.g. a server restart)."""
        free = tuner.config.max_parallel - sum(v.running for v in views)
        again = [v for v in views if v.status == "Failed" and self._retryable(v)][:max(0, free)]
        for view in again:
            row = TuningTrial(training_job_name=trial_name(job.name, view.index), tuning_job_name=job.name,
                              trial_index=view.index, attempt=view.row.attempt + 1,
                              hyperparameters=dict(view.row.hyperparameters), intermediate=[], created=utcnow())
            self._record_and_launch(job, [row], tags)
        return bool(again)

    def _launch_new(self, job: TuningJob, tuner: Tuner, tags: list[dict[str, str]]) -> bool:
        suggestions = tuner.next_trials(tuner.slots())
        now = utcnow()
        rows = [TuningTrial(training_job_name=trial_name(job.name, tuner.next_index + k), tuning_job_name=job.name,
                            trial_index=tuner.next_index + k, attempt=1,
                            hyperparameters=self._capped(tuner, hp), intermediate=[], created=now)
                for k, hp in enumerate(suggestions)]
        self._record_and_launch(job, rows, tags)
        return bool(rows)

    @staticmethod
    def _capped(tuner: Tuner, hyperparameters: dict[str, str]) -> dict[str, str]:
        """Hyperband stops every job at MaxResource; an XGBoost job capped there ends by itself instead."""
        limit = tuner.max_resource
        rounds = hyperparameters.get("num_round")
        try:
            if limit is not None and rounds is not None and int(float(rounds)) > limit:
                return {**hyperparameters, "num_round": str(limit)}
        except ValueError:
            pass
        return hyperparameters

    def _record_and_launch(self, job: TuningJob, rows: list[TuningTrial], tags: list[dict[str, str]]) -> None:
        if not rows:
            return
        with self.db.transaction() as session:
            session.add_all(rows)  # recorded first: a restart finds them (and launches them) instead of re-asking
        for row in rows:
            self._launch(job, row, tags)

    def _launch(self, job: TuningJob, row: TuningTrial, tags: list[dict[str, str]]) -> None:
        # Imported here: the services package imports this module (circular at import time).
        from sagestack.services.sagemaker.training import create_training_job_from_request

        with self._lock:
            self._trials[row.training_job_name] = job.name
        params = trial_request(job.request, row.training_job_name, row.hyperparameters, tags)
        try:
            create_training_job_from_request(self.platform, params, tuning_job_name=job.name, region=_region(job.arn))
        except AwsError as error:
            with self._lock:
                self._trials.pop(row.training_job_name, None)
            log.warning("tuning job %s: training job %s was refused: %s", job.name, row.training_job_name,
                        error.message)
            self._update_trial(row.training_job_name, launch_error=f"ClientError: {error.message}"[:1024])

    def _stop_all(self, views: Iterable[TrialView], reason: str) -> None:
        for view in views:
            if view.running:
                self._stop_trial(view, reason)

    def _stop_trial(self, view: TrialView, reason: str) -> None:
        """StopTrainingJob with a reason the trial's FailureReason and status message carry."""
        if view.job is None:
            self._update_trial(view.name, stop_reason=reason)
            return
        now = utcnow()
        with self.db.transaction() as session:
            job = session.get(TrainingJob, view.name)
            if job is None or job.status != "InProgress" or job.stop_requested:
                return
            job.stop_requested = True
            job.status = job.secondary_status = "Stopping"
            job.transitions = next_transitions(job.transitions, "Stopping", reason, now)
            job.last_modified = now
            trial = session.get(TuningTrial, view.name)
            if trial is not None:
                trial.stop_reason = reason
        self.training.stop(view.name, reason)

    def _complete(self, job: TuningJob, tuner: Tuner, done: Completion, views: Sequence[TrialView]) -> None:
        """Every trial ended: Completed with a best training job, or Failed without one."""
        if tuner.best() is not None:
            converged = done.criterion == "ConvergenceDetected"
            self._end(job.name, "Completed", completion_criterion=done.criterion,
                      convergence_time=utcnow() if converged else None)
            return
        metric, _ = objective_of(job.request)
        failed = [v for v in views if v.status == "Failed"]
        reason = f"No training job of the tuning job reported the objective metric {metric}."
        if failed:
            reason += f" First failure: {failed[0].name}: {failed[0].failure_reason}"
        self._end(job.name, "Failed", failure_reason=reason[:1024], completion_criterion=done.criterion)

    # ------------------------------------------------------------ persistence helpers
    def _end(self, name: str, status: str, **fields: Any) -> None:
        now = utcnow()
        self._set_job(name, status=status, ended=now, **fields)
        self._forget(name)
        log.info("tuning job %s %s", name, status)

    def _set_job(self, name: str, **fields: Any) -> None:
        with self.db.transaction() as session:
            job = session.get(TuningJob, name)
            for key, value in fields.items():
                setattr(job, key, value)
            job.last_modified = utcnow()

    def _update_trial(self, name: str, **fields: Any) -> None:
        with self.db.transaction() as session:
            row = session.get(TuningTrial, name)
            for key, value in fields.items():
                setattr(row, key, value)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._active.discard(name)
            self._metrics.pop(name, None)
            for trial in [t for t, owner in self._trials.items() if owner == name]:
                self._trials.pop(trial, None)
                self._curves.pop(trial, None)


def runtime_seconds(job: TuningJob, now: datetime | None = None) -> int:
    """ConsumedResources.RuntimeInSeconds: the tuning job's wall time so far."""
    end = job.ended or now or utcnow()
    return max(0, round((end - job.created).total_seconds()))
