"""Tuning jobs' state as handlers and the tuning controller read it: trials, counters, trial requests.

A tuning job's trials are ordinary training jobs named ``<tuning job>-<NNN>-<8 hex>``
(NNN: the 1-based suggestion index); see control/tuning.py for how they are run.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from sagestack.algorithms.catalog import resolve_image
from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.db.models.tuning import TuningJob, TuningTrial
from sagestack.logic.sagemaker.statuses import TERMINAL
from sagestack.tuning import TrialRecord, Tuner, parse_request

#: Definition members a trial's CreateTrainingJob request takes over unchanged.
PASSED_THROUGH = ("InputDataConfig", "VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                  "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy", "Environment")


# -- reading the persisted state ------------------------------------------------------------


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


def runtime_seconds(job: TuningJob, now: datetime | None = None) -> int:
    """ConsumedResources.RuntimeInSeconds: the tuning job's wall time so far."""
    end = job.ended or now or utcnow()
    return max(0, round((end - job.created).total_seconds()))
