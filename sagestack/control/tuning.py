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

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select

from sagestack.arns import arn_region
from sagestack.aws.errors import AwsError
from sagestack.control.training import TrainingController
from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.db.models.tuning import TuningJob, TuningTrial
from sagestack.logic.sagemaker.statuses import ACTIVE
from sagestack.logic.sagemaker.training import create_training_job, request_stop
from sagestack.logic.sagemaker.tuning import (
    TrialView,
    build_tuner,
    latest,
    load_views,
    objective_of,
    parent_views,
    trial_name,
    trial_request,
)
from sagestack.logic.tags import tag_list
from sagestack.platform import Platform
from sagestack.tuning import Completion, Tuner

log = logging.getLogger("sagestack.tuning")

RECONCILE_SECONDS = 0.5
#: Launches of one suggestion whose training jobs keep failing with internal errors.
MAX_ATTEMPTS = 3
#: With no trial succeeding, this many failed trials (fewer if the budget is smaller) fail the tuning job.
FAIL_FAST_TRIALS = 3


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
            tags = tag_list(session, job.arn)
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
        with self._lock:
            self._trials[row.training_job_name] = job.name
        params = trial_request(job.request, row.training_job_name, row.hyperparameters, tags)
        try:
            create_training_job(self.db, self.platform.account_id, self.training, params, arn_region(job.arn),
                                tuning_job_name=job.name)
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
            request_stop(job, reason, now)
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
