"""Which trial is best, and when a tuning job is done.

Completion criteria (``TuningJobCompletionCriteria`` plus ``ResourceLimits``), any one
of which ends the tuning job:

- ``MaxNumberOfTrainingJobs`` launched (inferred for Grid): launch nothing more and
  let the running jobs finish.
- ``TargetObjectiveMetricValue``: a job reached it (``>=`` when maximizing, ``<=``
  when minimizing).
- ``BestObjectiveNotImproving.MaxNumberOfTrainingJobsNotImproving``: that many jobs in a
  row failed to improve the best objective by at least 1 % (the API model's
  definition of "improving").
- ``ConvergenceDetected.CompleteOnConvergence=Enabled``: AMT's convergence test is not
  public. Ours: at least ``CONVERGENCE_MIN_JOBS`` ranked jobs and the latest half of
  them (and at least ``CONVERGENCE_MIN_WINDOW``) brought no improvement above 1 %.

For the three criteria the tuning job is done at once, so the running jobs are stopped.
``MaxRuntimeInSeconds`` needs a clock and stays with the platform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sagestack.tuning.trials import TrialRecord

#: "Improving" means by at least this fraction of the current best (API model: 1 %).
SIGNIFICANT_IMPROVEMENT = 0.01
CONVERGENCE_MIN_JOBS = 10
CONVERGENCE_MIN_WINDOW = 5


@dataclass(frozen=True)
class Completion:
    """Why a tuning job stops launching training jobs.

    ``criterion`` names the field that fired; ``stop_running`` tells the platform to
    stop the training jobs still running (False: let them finish, then complete).
    """

    criterion: str
    reason: str
    stop_running: bool


def ranked(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [t for t in trials if t.ranked]


def best_trial(trials: Sequence[TrialRecord], maximize: bool) -> TrialRecord | None:
    """Best objective among ranked trials; ties go to the earliest trial (stable, documented nowhere)."""
    candidates = ranked(trials)
    if not candidates:
        return None
    sign = -1.0 if maximize else 1.0
    return min(candidates, key=lambda t: (sign * float(t.objective or 0.0), t.index))


def _improves(value: float, best: float, maximize: bool) -> bool:
    margin = SIGNIFICANT_IMPROVEMENT * abs(best)
    return value > best + margin if maximize else value < best - margin


def jobs_not_improving(trials: Sequence[TrialRecord], maximize: bool) -> int:
    """``TuningJobCompletionDetails.NumberOfTrainingJobsObjectiveNotImproving``.

    Ranked trials in launch order; the count restarts at every trial that improves the
    best so far by at least 1 %. A better-but-not-significantly trial still becomes the
    new reference, so a slow creep eventually counts as improvement too.
    """
    best: float | None = None
    streak = 0
    for trial in ranked(trials):
        value = float(trial.objective)  # type: ignore[arg-type]
        if best is None or _improves(value, best, maximize):
            streak = 0
        else:
            streak += 1
        if best is None or (value > best if maximize else value < best):
            best = value
    return streak


def converged(trials: Sequence[TrialRecord], maximize: bool) -> bool:
    done = ranked(trials)
    if len(done) < CONVERGENCE_MIN_JOBS:
        return False
    window = max(CONVERGENCE_MIN_WINDOW, math.ceil(len(done) / 2))
    return jobs_not_improving(done, maximize) >= window


def target_reached(trials: Sequence[TrialRecord], target: float, maximize: bool) -> TrialRecord | None:
    for trial in ranked(trials):
        value = float(trial.objective)  # type: ignore[arg-type]
        if (value >= target) if maximize else (value <= target):
            return trial
    return None


def check_completion(criteria: Mapping[str, Any] | None, trials: Sequence[TrialRecord],
                     max_jobs: int, maximize: bool) -> Completion | None:
    """The first criterion met, budget first; None while the tuning job should go on."""
    if len(trials) >= max_jobs:
        return Completion("MaxNumberOfTrainingJobs",
                          f"launched {len(trials)} of {max_jobs} training jobs", stop_running=False)
    return _criteria_met(criteria or {}, trials, maximize)


def _criteria_met(criteria: Mapping[str, Any], trials: Sequence[TrialRecord],
                  maximize: bool) -> Completion | None:
    target = criteria.get("TargetObjectiveMetricValue")
    if target is not None:
        hit = target_reached(trials, float(target), maximize)
        if hit is not None:
            return Completion("TargetObjectiveMetricValue",
                              f"training job {hit.index} reached {hit.objective:g} (target {target:g})",
                              stop_running=True)
    patience = (criteria.get("BestObjectiveNotImproving") or {}).get("MaxNumberOfTrainingJobsNotImproving")
    if patience is not None:
        streak = jobs_not_improving(trials, maximize)
        if streak >= int(patience):
            return Completion("BestObjectiveNotImproving",
                              f"{streak} training jobs in a row did not improve the best objective by 1%",
                              stop_running=True)
    convergence = (criteria.get("ConvergenceDetected") or {}).get("CompleteOnConvergence")
    if convergence == "Enabled" and converged(trials, maximize):
        return Completion("ConvergenceDetected", "the objective stopped improving by more than 1%",
                          stop_running=True)
    return None
