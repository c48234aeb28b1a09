"""Hyperparameter tuning jobs: Create, Describe, List, Stop, Delete, and their training jobs.

The tuning itself (suggesting, launching, stopping trials) runs in control/tuning.py;
these handlers validate, persist, and read back what it recorded (through
logic/sagemaker/tuning.py, which the controller reads with too).
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import delete

from sagestack.algorithms.catalog import resolve_image
from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.tuning import TuningJob, TuningTrial
from sagestack.logic.sagemaker import tuning as trials
from sagestack.logic.sagemaker.statuses import TERMINAL
from sagestack.logic.sagemaker.training import checked_training_request
from sagestack.logic.tags import drop_tags, put_tags
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import (
    already_exists,
    list_result,
    load_row,
    page_result,
    require_assumable_role,
    resource_arn,
    rows_with_status,
    sort_items,
)
from sagestack.tuning import Tuner, parse_request, validate

MAX_NAME_LENGTH = 32
KIND = "hyper-parameter-tuning-job"


def _invalid(message: str) -> AwsError:
    return AwsError("ValidationException", message, 400)


# ---------------------------------------------------------------- create


def _check_request(ctx: RequestContext, params: dict[str, Any]) -> None:
    name = params["HyperParameterTuningJobName"]
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(f"The hyperparameter tuning job name {name} is {len(name)} characters long; "
                       f"at most {MAX_NAME_LENGTH} are allowed.")
    if params.get("Autotune"):
        raise _invalid("Autotune is not supported by sagestack: specify the Strategy, ParameterRanges and "
                       "ResourceLimits yourself.")
    errors = validate(params)
    if errors:
        raise _invalid(" ".join(errors))
    definition = trials.definition_of(params)
    for each in [params.get("TrainingJobDefinition") or {}, *(params.get("TrainingJobDefinitions") or [])]:
        if each.get("RoleArn"):
            require_assumable_role(ctx, each["RoleArn"])
    spec = definition.get("AlgorithmSpecification") or {}
    if not spec.get("TrainingImage"):
        raise _invalid("AlgorithmSpecification.TrainingImage is required: sagestack runs built-in images only "
                       "(AlgorithmName and marketplace algorithms are not supported).")
    if not definition.get("ResourceConfig") and not definition.get("HyperParameterTuningResourceConfig"):
        raise _invalid("The training job definition needs a ResourceConfig or a HyperParameterTuningResourceConfig.")
    _check_objective(params, spec)
    # A trial is an ordinary training job: refuse now what CreateTrainingJob would refuse for every trial.
    probe = trials.trial_request(params, f"{name}-001-00000000", dict(definition.get("StaticHyperParameters") or {}),
                                  [])
    checked_training_request(ctx.platform.training, probe)


def _check_objective(params: dict[str, Any], spec: dict[str, Any]) -> None:
    config, _ = parse_request(params)
    assert config is not None
    algorithm = resolve_image(spec["TrainingImage"])
    if not config.objective_hyperparameter or algorithm is None:
        return  # the definition's own MetricDefinitions declare the objective
    objectives = algorithm.tuning_objectives()
    if config.metric not in objectives:
        raise _invalid(f"The objective metric {config.metric} is not emitted by the {algorithm.name} algorithm. "
                       f"Choose one of {', '.join(sorted(objectives))}, or declare it in "
                       "AlgorithmSpecification.MetricDefinitions.")


def _check_parents(session: Any, request: dict[str, Any]) -> None:
    warm = request.get("WarmStartConfig")
    if not warm:
        return
    metric, _ = trials.objective_of(request)
    for parent in warm["ParentHyperParameterTuningJobs"]:
        name = parent.get("HyperParameterTuningJobName") or ""
        row = session.get(TuningJob, name)
        if row is None:
            raise _invalid(f"The parent hyperparameter tuning job {name} does not exist.")
        if row.status not in TERMINAL:
            raise _invalid(f"The parent hyperparameter tuning job {name} is {row.status}; warm start needs parent "
                           "jobs that are Completed, Stopped or Failed.")
        parent_metric, _ = trials.objective_of(row.request)
        if parent_metric != metric:
            raise _invalid(f"The parent hyperparameter tuning job {name} optimized {parent_metric}; warm start "
                           f"needs the same objective metric ({metric}).")


def _stored_request(params: dict[str, Any]) -> dict[str, Any]:
    """The request as Describe echoes it: Tags apart, Grid's job count and the defaults filled in."""
    request = copy.deepcopy(params)
    request.pop("Tags", None)
    config = request["HyperParameterTuningJobConfig"]
    config["ResourceLimits"]["MaxNumberOfTrainingJobs"] = Tuner(params).max_jobs
    config.setdefault("TrainingJobEarlyStoppingType", "Off")
    return request


@operation("sagemaker")
def create_hyper_parameter_tuning_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["HyperParameterTuningJobName"]
    arn = resource_arn(ctx, KIND, name)
    _check_request(ctx, params)
    request = _stored_request(params)
    now = utcnow()
    with ctx.platform.db.transaction() as session:
        if session.get(TuningJob, name) is not None:
            raise already_exists("Hyperparameter tuning job", name, arn)
        _check_parents(session, request)
        session.add(TuningJob(name=name, arn=arn, request=request, status="InProgress", created=now,
                              last_modified=now))
        put_tags(session, arn, params.get("Tags", []))
    ctx.platform.tuning.submit(name, request)
    return {"HyperParameterTuningJobArn": arn}


# ---------------------------------------------------------------- describe


def _load(session: Any, name: str) -> TuningJob:
    return load_row(session, TuningJob, name, "hyper-parameter tuning job")


def trial_summary(view: trials.TrialView, tuner: Tuner, tuning_job: str, objective_type: str,
                  definition_name: str | None = None) -> dict[str, Any]:
    """A HyperParameterTrainingJobSummary (a trial of ``tuning_job``, which may be a warm-start parent)."""
    job = view.job
    assert job is not None
    summary: dict[str, Any] = {
        "TrainingJobName": view.name,
        "TrainingJobArn": job.arn,
        "TuningJobName": tuning_job,
        "CreationTime": job.created,
        "TrainingJobStatus": job.status,
        "TunedHyperParameters": tuner.tuned(view.row.hyperparameters),
        "ObjectiveStatus": view.objective_status,
    }
    if definition_name:
        summary["TrainingJobDefinitionName"] = definition_name
    if job.training_start is not None:
        summary["TrainingStartTime"] = job.training_start
    if job.training_end is not None:
        summary["TrainingEndTime"] = job.training_end
    if job.failure_reason:
        summary["FailureReason"] = job.failure_reason
    if view.objective is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": objective_type, "MetricName": view.metric, "Value": view.objective}
    return summary


def _best(views: list[trials.TrialView], name: str | None) -> trials.TrialView | None:
    return next((v for v in views if v.name == name and v.job is not None), None)


def describe(session: Any, job: TuningJob) -> dict[str, Any]:
    views = trials.load_views(session, job)
    current = trials.latest(views)
    parents = trials.parent_views(session, job.request)
    tuner = trials.build_tuner(job.request, current, parents)
    _, objective_type = trials.objective_of(job.request)
    definition_name = trials.definition_of(job.request).get("DefinitionName")
    result: dict[str, Any] = {
        key: job.request[key] for key in ("HyperParameterTuningJobConfig", "TrainingJobDefinition",
                                          "TrainingJobDefinitions", "WarmStartConfig") if key in job.request
    }
    result.update({
        "HyperParameterTuningJobName": job.name,
        "HyperParameterTuningJobArn": job.arn,
        "HyperParameterTuningJobStatus": job.status,
        "CreationTime": job.created,
        "LastModifiedTime": job.last_modified,
        "TrainingJobStatusCounters": trials.status_counters(views),
        "ObjectiveStatusCounters": trials.objective_counters(views),
        "TuningJobCompletionDetails": _completion_details(job, tuner),
        "ConsumedResources": {"RuntimeInSeconds": trials.runtime_seconds(job)},
    })
    if job.ended is not None:
        result["HyperParameterTuningEndTime"] = job.ended
    if job.status == "Failed" and job.failure_reason:
        result["FailureReason"] = job.failure_reason
    best = tuner.best()
    best_view = _best(current, best.name if best else None)
    if best_view is not None:
        result["BestTrainingJob"] = trial_summary(best_view, tuner, job.name, objective_type, definition_name)
    overall = _overall_best(job, tuner, current, parents, objective_type, definition_name)
    if overall is not None:
        result["OverallBestTrainingJob"] = overall
    return result


def _completion_details(job: TuningJob, tuner: Tuner) -> dict[str, Any]:
    details: dict[str, Any] = {"NumberOfTrainingJobsObjectiveNotImproving": tuner.jobs_not_improving()}
    if job.convergence_time is not None:
        details["ConvergenceDetectedTime"] = job.convergence_time
    return details


def _overall_best(job: TuningJob, tuner: Tuner, own: list[trials.TrialView], parents: list[trials.TrialView],
                  objective_type: str, definition_name: str | None) -> dict[str, Any] | None:
    """OverallBestTrainingJob: IdenticalDataAndAlgorithm warm starts rank the parents' jobs too."""
    if (job.request.get("WarmStartConfig") or {}).get("WarmStartType") != "IdenticalDataAndAlgorithm":
        return None
    best = tuner.overall_best()
    view = _best([*own, *parents], best.name if best else None)
    if view is None or view.job is None:
        return None
    return trial_summary(view, tuner, view.row.tuning_job_name, objective_type, definition_name)


@operation("sagemaker")
def describe_hyper_parameter_tuning_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        return describe(session, _load(session, params["HyperParameterTuningJobName"]))


# ---------------------------------------------------------------- list, stop, delete


def _ascending_by_name(params: dict[str, Any]) -> dict[str, Any]:
    """These two List operations sort by Name, Ascending unless told otherwise."""
    return {**params, "SortBy": params.get("SortBy") or "Name", "SortOrder": params.get("SortOrder") or "Ascending"}


def _job_summary(session: Any, job: TuningJob) -> dict[str, Any]:
    views = trials.load_views(session, job)
    config = job.request["HyperParameterTuningJobConfig"]
    summary: dict[str, Any] = {
        "HyperParameterTuningJobName": job.name,
        "HyperParameterTuningJobArn": job.arn,
        "HyperParameterTuningJobStatus": job.status,
        "Strategy": config["Strategy"],
        "CreationTime": job.created,
        "LastModifiedTime": job.last_modified,
        "TrainingJobStatusCounters": trials.status_counters(views),
        "ObjectiveStatusCounters": trials.objective_counters(views),
        "ResourceLimits": config["ResourceLimits"],
    }
    if job.ended is not None:
        summary["HyperParameterTuningEndTime"] = job.ended
    return summary


@operation("sagemaker")
def list_hyper_parameter_tuning_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        jobs = rows_with_status(session, TuningJob, params)
        return list_result(jobs, params, "HyperParameterTuningJobSummaries", lambda j: _job_summary(session, j),
                           sort_params=_ascending_by_name(params))


@operation("sagemaker")
def list_training_jobs_for_hyper_parameter_tuning_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        job = _load(session, params["HyperParameterTuningJobName"])
        views = [v for v in trials.load_views(session, job) if v.job is not None]
        tuner = trials.build_tuner(job.request, trials.latest(views), [])
    _, objective_type = trials.objective_of(job.request)
    definition_name = trials.definition_of(job.request).get("DefinitionName")
    if params.get("StatusEquals"):
        views = [v for v in views if v.status == params["StatusEquals"]]
    order = _ascending_by_name(params)
    if order["SortBy"] == "FinalObjectiveMetricValue":
        views = [v for v in views if v.objective is not None]  # documented: jobs without one are not listed
    views = sort_items(views, order, {
        "Name": lambda v: v.name, "CreationTime": lambda v: v.job.created, "Status": lambda v: v.status,
        "FinalObjectiveMetricValue": lambda v: v.objective}, default="Name")
    return page_result("TrainingJobSummaries", views, params,
                       lambda v: trial_summary(v, tuner, job.name, objective_type, definition_name))


@operation("sagemaker")
def stop_hyper_parameter_tuning_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["HyperParameterTuningJobName"]
    with ctx.platform.db.transaction() as session:
        job = _load(session, name)
        if job.status != "InProgress":
            raise _invalid(f"The hyperparameter tuning job {name} is {job.status}; only a job that is InProgress "
                           "can be stopped.")
        job.status = "Stopping"
        job.stop_requested = True
        job.last_modified = utcnow()
    ctx.platform.tuning.wake()
    return {}


@operation("sagemaker")
def delete_hyper_parameter_tuning_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Deletes the tuning job's record; its training jobs stay, as in SageMaker."""
    name = params["HyperParameterTuningJobName"]
    with ctx.platform.db.transaction() as session:
        job = _load(session, name)
        if job.status not in TERMINAL:
            raise _invalid(f"The hyperparameter tuning job {name} is {job.status}; stop it before deleting it.")
        session.execute(delete(TuningTrial).where(TuningTrial.tuning_job_name == name))
        drop_tags(session, job.arn)
        session.delete(job)
    return {}
