"""The tuning brain of one hyperparameter tuning job: validate, suggest, stop, complete, rank.

A :class:`Tuner` is cheap and stateless between calls. The platform builds one from the
``CreateHyperParameterTuningJob`` request (botocore member names) and the trials it
has recorded, asks it what to do, persists the answer, and throws it away. Because every
decision is a function of those persisted facts, a server restart neither repeats nor
loses a trial.

The contract with the platform, per reconcile pass::

    tuner = Tuner(request, trials, parent_trials)
    for index, reason in tuner.stop_decisions().items(): stop that training job
    done = tuner.is_complete()
    if not done:
        for k, hp in enumerate(tuner.next_trials(tuner.slots())):
            persist TrialRecord(index=tuner.next_index + k, hyperparameters=hp, status="Pending")
            ... then launch it
    elif done.stop_running: stop the running jobs
    if tuner.finished: mark the tuning job Completed
    best = tuner.best()
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sagestack.tuning.completion import Completion, best_trial, check_completion, jobs_not_improving
from sagestack.tuning.early_stopping import HyperbandSchedule, median_rule
from sagestack.tuning.space import (
    MAX_HYPERPARAMETERS,
    SearchSpace,
    TuningValidationError,
    parse_ranges,
)
from sagestack.tuning.strategies import STRATEGIES, SuggestionContext, strategy_for
from sagestack.tuning.trials import TrialRecord, coerce_all

#: Default AMT quotas: training jobs per tuning job (all strategies) and parallel jobs
#: (10 by default, raisable to 100; we allow the raised value).
MAX_TRAINING_JOBS = 750
MAX_PARALLEL_TRAINING_JOBS = 100
MAX_HYPERBAND_RESOURCE = 20000
RUNTIME_SECONDS = (120, 15768000)
MAX_PARENT_JOBS = 5
MIN_JOBS_NOT_IMPROVING = 3
#: Static hyperparameters Hyperband reads MaxResource from when it is not given.
EPOCH_KEYS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
#: AMT passes the objective to built-in algorithms as this extra hyperparameter.
OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"


@dataclass(frozen=True)
class TuningConfig:
    """The parts of a CreateHyperParameterTuningJob request the tuner acts on."""

    name: str
    strategy: str
    metric: str
    maximize: bool
    space: SearchSpace
    static: Mapping[str, str]
    max_jobs: int
    max_parallel: int
    early_stopping: str
    seed: int
    criteria: Mapping[str, Any]
    hyperband: HyperbandSchedule | None
    warm_start_type: str | None
    objective_hyperparameter: bool


def validate(request: Mapping[str, Any]) -> list[str]:
    """Every problem with a CreateHyperParameterTuningJob request; empty when it is valid.

    Shape constraints (types, enums, lengths) are the API layer's job and are only
    re-checked where the tuner would otherwise misbehave.
    """
    return parse_request(request)[1]


def parse_request(request: Mapping[str, Any],
                  objective_hyperparameter: bool | None = None) -> tuple[TuningConfig | None, list[str]]:
    errors: list[str] = []
    config = request.get("HyperParameterTuningJobConfig") or {}
    definition = _definition(request, errors)
    strategy = str(config.get("Strategy") or "")
    if strategy not in STRATEGIES:
        errors.append(f"Strategy '{strategy}' is not one of {', '.join(STRATEGIES)}.")
    metric, maximize = _objective(config, definition, errors)
    ranges = config.get("ParameterRanges") or definition.get("HyperParameterRanges")
    space, range_errors = parse_ranges(ranges)
    errors += range_errors
    static = {str(k): str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
    inject = objective_hyperparameter
    if inject is None:
        inject = _inject_objective(definition, metric)
    errors += _static_problems(space, static, inject)
    max_jobs, max_parallel = _limits(config, strategy, space, errors)
    early_stopping = str(config.get("TrainingJobEarlyStoppingType") or "Off")
    hyperband = _hyperband(config, strategy, early_stopping, static, errors)
    errors += _seed_criteria_warm_start_problems(config, request.get("WarmStartConfig"))
    if errors:
        return None, errors
    name = str(request.get("HyperParameterTuningJobName") or "")
    return TuningConfig(
        name=name, strategy=strategy, metric=metric, maximize=maximize, space=space, static=static,
        max_jobs=max_jobs, max_parallel=max_parallel, early_stopping=early_stopping,
        seed=_seed(config, name), criteria=config.get("TuningJobCompletionCriteria") or {},
        hyperband=hyperband, warm_start_type=(request.get("WarmStartConfig") or {}).get("WarmStartType"),
        objective_hyperparameter=inject,
    ), []


# -- request pieces ---------------------------------------------------------------------


def _definition(request: Mapping[str, Any], errors: list[str]) -> Mapping[str, Any]:
    single = request.get("TrainingJobDefinition")
    several = request.get("TrainingJobDefinitions") or []
    if single and several:
        errors.append("Specify either TrainingJobDefinition or TrainingJobDefinitions, not both.")
    if single:
        return single
    if len(several) > 1:
        errors.append("Tuning jobs with more than one training job definition are not supported.")
    if several:
        return several[0]
    errors.append("A TrainingJobDefinition is required.")
    return {}


def _objective(config: Mapping[str, Any], definition: Mapping[str, Any],
               errors: list[str]) -> tuple[str, bool]:
    objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective") or {}
    metric, kind = str(objective.get("MetricName") or ""), str(objective.get("Type") or "")
    if not metric:
        errors.append("HyperParameterTuningJobObjective with a MetricName is required.")
    elif kind not in ("Maximize", "Minimize"):
        errors.append(f"The objective Type '{kind}' is not one of Maximize, Minimize.")
    return metric, kind != "Minimize"


def _inject_objective(definition: Mapping[str, Any], metric: str) -> bool:
    """Built-in algorithms define their own metrics and read the objective from a hyperparameter.

    A definition that declares the objective in its MetricDefinitions brings its own
    container, which does not expect the extra key.
    """
    declared = (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
    return bool(metric) and all(d.get("Name") != metric for d in declared)


def _static_problems(space: SearchSpace, static: Mapping[str, str], inject: bool) -> list[str]:
    problems = [f"The hyperparameter '{name}' cannot be both static and tunable."
                for name in space.names if name in static]
    total = len(static) + len(space) + (1 if inject and OBJECTIVE_HYPERPARAMETER not in static else 0)
    if total > MAX_HYPERPARAMETERS:
        problems.append(f"The tuning job uses {total} static and tunable hyperparameters "
                        f"(including {OBJECTIVE_HYPERPARAMETER}); at most {MAX_HYPERPARAMETERS} are allowed.")
    return problems


def _limits(config: Mapping[str, Any], strategy: str, space: SearchSpace,
            errors: list[str]) -> tuple[int, int]:
    limits = config.get("ResourceLimits") or {}
    parallel = limits.get("MaxParallelTrainingJobs")
    if not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL_TRAINING_JOBS:
        errors.append("MaxParallelTrainingJobs must be an integer between 1 and "
                      f"{MAX_PARALLEL_TRAINING_JOBS}.")
        parallel = 1
    runtime = limits.get("MaxRuntimeInSeconds")
    if runtime is not None and not RUNTIME_SECONDS[0] <= runtime <= RUNTIME_SECONDS[1]:
        errors.append(f"MaxRuntimeInSeconds must be between {RUNTIME_SECONDS[0]} and {RUNTIME_SECONDS[1]}.")
    if strategy == "Grid":
        return _grid_jobs(limits.get("MaxNumberOfTrainingJobs"), space, errors), parallel
    jobs = limits.get("MaxNumberOfTrainingJobs")
    if jobs is None:
        errors.append(f"MaxNumberOfTrainingJobs is required for the {strategy or 'chosen'} strategy.")
        return 1, parallel
    if not isinstance(jobs, int) or not 1 <= jobs <= MAX_TRAINING_JOBS:
        errors.append(f"MaxNumberOfTrainingJobs must be an integer between 1 and {MAX_TRAINING_JOBS}.")
        return 1, parallel
    return jobs, parallel


def _grid_jobs(given: Any, space: SearchSpace, errors: list[str]) -> int:
    """Grid launches one job per combination; a given MaxNumberOfTrainingJobs must agree."""
    numeric = [p for p in space if p.kind != "Categorical"]
    if numeric:
        errors.append(f"The Grid strategy supports only categorical hyperparameters, but '{numeric[0].name}' "
                      f"is a {numeric[0].kind.lower()} range. Use CategoricalParameterRanges.")
        return 1
    combinations = space.grid_size()
    if combinations > MAX_TRAINING_JOBS:
        errors.append(f"The Grid strategy would launch {combinations} training jobs (one per combination "
                      f"of categorical values); at most {MAX_TRAINING_JOBS} are allowed.")
    elif given is not None and given != combinations:
        errors.append(f"For the Grid strategy, omit MaxNumberOfTrainingJobs or set it to the number of "
                      f"distinct combinations of categorical values ({combinations}), not {given}.")
    return max(1, combinations)


def _hyperband(config: Mapping[str, Any], strategy: str, early_stopping: str, static: Mapping[str, str],
               errors: list[str]) -> HyperbandSchedule | None:
    if early_stopping not in ("Off", "Auto"):
        errors.append(f"TrainingJobEarlyStoppingType '{early_stopping}' is not one of Off, Auto.")
    strategy_config = config.get("StrategyConfig")
    if strategy != "Hyperband":
        if strategy_config:
            errors.append("StrategyConfig can be specified only when Strategy is Hyperband.")
        return None
    if early_stopping != "Off":
        errors.append("TrainingJobEarlyStoppingType must be Off when Strategy is Hyperband: "
                      "Hyperband has its own early stopping mechanism.")
    settings = (strategy_config or {}).get("HyperbandStrategyConfig") or {}
    low = settings.get("MinResource", 1)
    high = settings.get("MaxResource")
    if high is None:
        high = _epochs_from_static(static)
        if high is None:
            errors.append("Hyperband could not infer MaxResource: specify "
                          "HyperbandStrategyConfig.MaxResource or one of the static hyperparameters "
                          f"{', '.join(EPOCH_KEYS)}.")
            return None
    return _hyperband_schedule(low, high, errors)


def _epochs_from_static(static: Mapping[str, str]) -> int | None:
    for key in EPOCH_KEYS:
        if key in static:
            try:
                return int(float(static[key]))
            except ValueError:
                return None
    return None


def _hyperband_schedule(low: Any, high: Any, errors: list[str]) -> HyperbandSchedule | None:
    if not isinstance(low, int) or not isinstance(high, int) or low < 1 or high < 1:
        errors.append("Hyperband MinResource and MaxResource must be integers of at least 1.")
    elif high > MAX_HYPERBAND_RESOURCE:
        errors.append(f"Hyperband MaxResource is {high}; the maximum value is {MAX_HYPERBAND_RESOURCE}.")
    elif low > high:
        errors.append(f"Hyperband MinResource ({low}) must not be greater than MaxResource ({high}).")
    else:
        return HyperbandSchedule(low, high)
    return None


def _seed_criteria_warm_start_problems(config: Mapping[str, Any],
                                       warm_start: Mapping[str, Any] | None) -> list[str]:
    problems: list[str] = []
    seed = config.get("RandomSeed")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        problems.append("RandomSeed must be an integer of at least 0.")
    criteria = config.get("TuningJobCompletionCriteria") or {}
    patience = (criteria.get("BestObjectiveNotImproving") or {}).get("MaxNumberOfTrainingJobsNotImproving")
    if patience is not None and (not isinstance(patience, int) or patience < MIN_JOBS_NOT_IMPROVING):
        problems.append(f"MaxNumberOfTrainingJobsNotImproving must be at least {MIN_JOBS_NOT_IMPROVING}.")
    convergence = (criteria.get("ConvergenceDetected") or {}).get("CompleteOnConvergence")
    if convergence is not None and convergence not in ("Disabled", "Enabled"):
        problems.append(f"CompleteOnConvergence '{convergence}' is not one of Disabled, Enabled.")
    if warm_start:
        parents = warm_start.get("ParentHyperParameterTuningJobs") or []
        if not 1 <= len(parents) <= MAX_PARENT_JOBS:
            problems.append(f"WarmStartConfig must name between 1 and {MAX_PARENT_JOBS} parent tuning jobs.")
        if warm_start.get("WarmStartType") not in ("IdenticalDataAndAlgorithm", "TransferLearning"):
            problems.append("WarmStartType must be IdenticalDataAndAlgorithm or TransferLearning.")
    return problems


def _seed(config: Mapping[str, Any], name: str) -> int:
    """RandomSeed, else one derived from the job name so restarts still replay the same draws."""
    seed = config.get("RandomSeed")
    if seed is not None:
        return int(seed)
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


# -- the tuner ------------------------------------------------------------------------------


class Tuner:
    """Decisions for one tuning job, rebuilt from its request and its recorded trials.

    ``trials`` are this job's :class:`TrialRecord` s (or mappings with the same keys),
    including the ones suggested but not yet launched. ``parent_trials`` are the ranked
    training jobs of warm-start parents: Bayesian learns from them, and
    :meth:`overall_best` ranks them. Raises :class:`TuningValidationError` for an
    invalid request.
    """

    def __init__(self, request: Mapping[str, Any], trials: Sequence[TrialRecord | Mapping[str, Any]] = (),
                 parent_trials: Sequence[TrialRecord | Mapping[str, Any]] = (), *,
                 objective_hyperparameter: bool | None = None) -> None:
        config, errors = parse_request(request, objective_hyperparameter)
        if config is None:
            raise TuningValidationError(errors)
        self.config = config
        self.trials = coerce_all(trials)
        self.parent_trials = coerce_all(parent_trials)

    validate = staticmethod(validate)

    # -- facts --------------------------------------------------------------------------

    @property
    def maximize(self) -> bool:
        return self.config.maximize

    @property
    def max_jobs(self) -> int:
        """MaxNumberOfTrainingJobs, inferred for Grid (describe it back to the client)."""
        return self.config.max_jobs

    @property
    def next_index(self) -> int:
        return max((t.index for t in self.trials), default=-1) + 1

    @property
    def max_resource(self) -> int | None:
        """Hyperband's MaxResource: the epochs (boosting rounds) after which a job is stopped.

        Hyperband does not rewrite any hyperparameter; a platform that wants XGBoost jobs
        to end on their own may cap ``num_round`` at this value.
        """
        return self.config.hyperband.max_resource if self.config.hyperband else None

    def running(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.running]

    @property
    def finished(self) -> bool:
        """The tuning job is over: complete, and no training job is still running."""
        return self.is_complete() is not None and not self.running()

    def tuned(self, hyperparameters: Mapping[str, str]) -> dict[str, str]:
        """The tuned subset of a job's hyperparameters (``TunedHyperParameters``)."""
        return {n: hyperparameters[n] for n in self.config.space.names if n in hyperparameters}

    # -- launching ----------------------------------------------------------------------

    def slots(self) -> int:
        """How many new training jobs may start now (0 once the job is complete)."""
        if self.is_complete() is not None:
            return 0
        free = self.config.max_parallel - len(self.running())
        return max(0, min(free, self.config.max_jobs - len(self.trials)))

    def next_trials(self, count: int) -> list[dict[str, str]]:
        """Hyperparameters (all strings, static ones merged in) for up to ``count`` new jobs.

        Job ``k`` of the answer is trial ``next_index + k``. Persist each before launching
        it: the next Tuner must see it (as running) to avoid suggesting it again.
        """
        count = min(count, self.config.max_jobs - len(self.trials))
        if count <= 0 or self.is_complete() is not None:
            return []
        ctx = SuggestionContext(space=self.config.space, seed=self.config.seed, maximize=self.maximize,
                                trials=self.trials, next_index=self.next_index,
                                parent_trials=self.parent_trials)
        points = strategy_for(self.config.strategy).suggest(ctx, count)
        return [self._hyperparameters(self.config.space.format(p)) for p in points]

    def _hyperparameters(self, tuned: Mapping[str, str]) -> dict[str, str]:
        values = {**self.config.static, **tuned}
        if self.config.objective_hyperparameter:
            values.setdefault(OBJECTIVE_HYPERPARAMETER, self.config.metric)
        return values

    # -- stopping -----------------------------------------------------------------------

    def should_stop(self, trial_index: int, intermediate_values: Sequence[float] | None = None,
                    others: Sequence[TrialRecord | Mapping[str, Any]] | None = None) -> str | None:
        """Why the running job ``trial_index`` should be stopped now, or None.

        ``intermediate_values`` are its objective values so far, one per epoch (default:
        the recorded ones); ``others`` are the other trials (default: the recorded ones).
        """
        peers = self.trials if others is None else coerce_all(others)
        curves = {t.index: list(t.intermediate) for t in peers if t.index != trial_index}
        if intermediate_values is None:
            own = next((t for t in self.trials if t.index == trial_index), None)
            intermediate_values = list(own.intermediate) if own else []
        values = list(intermediate_values)
        if self.config.hyperband is not None:
            return self.config.hyperband.decide(self.config.seed, trial_index, values, curves, self.maximize)
        if self.config.early_stopping == "Auto":
            previous = [curve for index, curve in curves.items() if index < trial_index]
            return median_rule(values, previous, self.maximize)
        return None

    def stop_decisions(self) -> dict[int, str]:
        """Stop reasons for every recorded running trial that should stop now."""
        decisions = {}
        for trial in self.running():
            reason = self.should_stop(trial.index)
            if reason is not None:
                decisions[trial.index] = reason
        return decisions

    # -- completion and ranking ---------------------------------------------------------

    def is_complete(self,
                    trials: Sequence[TrialRecord | Mapping[str, Any]] | None = None) -> Completion | None:
        """Why the tuning job launches nothing more, or None. See :mod:`completion`.

        Not yet the end: the job is over when :attr:`finished` (running jobs ended, or
        were stopped because ``stop_running``).
        """
        records = self.trials if trials is None else coerce_all(trials)
        return check_completion(self.config.criteria, records, self.config.max_jobs, self.maximize)

    def best(self, trials: Sequence[TrialRecord | Mapping[str, Any]] | None = None) -> TrialRecord | None:
        """``BestTrainingJob``: the best ranked trial of this job by the objective's Type."""
        return best_trial(self.trials if trials is None else coerce_all(trials), self.maximize)

    def overall_best(self) -> TrialRecord | None:
        """``OverallBestTrainingJob`` (IdenticalDataAndAlgorithm warm start): parents included."""
        return best_trial([*self.trials, *self.parent_trials], self.maximize)

    def jobs_not_improving(self) -> int:
        """``TuningJobCompletionDetails.NumberOfTrainingJobsObjectiveNotImproving``."""
        return jobs_not_improving(self.trials, self.maximize)
