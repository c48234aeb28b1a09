"""Tuning strategies on the Adult data: Bayesian vs Random, and what early stopping saves.

Drives :class:`sagestack.tuning.Tuner` exactly as the platform's reconcile loop does:
a fresh Tuner is built from the recorded trials before every batch (so every
suggestion also exercises the rebuild-from-persisted-facts path), two trials are
asked at a time and trained side by side, one boosting round each in lockstep, and the
per-round ``validation:auc`` values (rounded to the 5 decimals of the container's log
lines) are fed to ``should_stop`` exactly as log parsing would feed them.

Setup (the issue's): label ``>50K`` -> 1, categoricals one-hot with pandas
``get_dummies``, 80/20 split, the 80 % split 80/20 again into train/validation;
ranges eta Continuous(0, 1), min_child_weight Continuous(1, 10), alpha Continuous(0, 2),
max_depth Integer(1, 10); static num_round=100, objective binary:logistic,
eval_metric auc; XGBoost in-process with nthread=2. The objective of a trial is the
*last* value it emitted, as in SageMaker.

Targets: mean best validation:auc of Bayesian >= Random's (20 trials x 5 seeds), and
TrainingJobEarlyStoppingType=Auto saves >= 20 % of the training time of Off at an equal
best objective (within 0.002). Random search makes the Auto-vs-Off comparison exact:
its suggestions do not depend on results, so both runs train the same 20 configurations
and differ only by the stopped rounds. The time saving is read from the Off run's
per-round clocks for both sides ("same-clock"), because wall and CPU time swing by 5x
when other work shares the two cores; the separately measured saving is printed too.
Bayesian with Auto and Hyperband are printed for information.

    .venv/bin/python bench/tuning_strategies.py [--seeds 5] [--trials 20] [--rounds 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import xgboost as xgb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit"))
import adult_prep  # noqa: E402

from sagestack.tuning import TrialRecord, Tuner  # noqa: E402

DATA = Path("/work/shared/datasets/adult/adult.data.gz")
METRIC = "validation:auc"


@dataclass
class RunResult:
    best: float
    rounds: int
    train_seconds: float
    tuner_seconds: float
    stopped: int
    records: list[TrialRecord] = field(default_factory=list)
    #: Per trial index, the cumulative training seconds after each round.
    clocks: dict[int, list[float]] = field(default_factory=dict)


def load_data() -> tuple[xgb.DMatrix, xgb.DMatrix]:
    frame = adult_prep.load(DATA)
    train_all, _test = adult_prep.split(frame)
    train, validation = adult_prep.split(train_all)

    def matrix(part: Any) -> xgb.DMatrix:
        return xgb.DMatrix(part.iloc[:, 1:].to_numpy(), label=part.iloc[:, 0].to_numpy(), nthread=2)

    return matrix(train), matrix(validation)


def request(strategy: str, seed: int, trials: int, parallel: int, rounds: int,
            early_stopping: str = "Off") -> dict[str, Any]:
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": METRIC},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": parallel},
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {"Name": "eta", "MinValue": "0", "MaxValue": "1", "ScalingType": "Auto"},
                {"Name": "min_child_weight", "MinValue": "1", "MaxValue": "10", "ScalingType": "Auto"},
                {"Name": "alpha", "MinValue": "0", "MaxValue": "2", "ScalingType": "Auto"},
            ],
            "IntegerParameterRanges": [
                {"Name": "max_depth", "MinValue": "1", "MaxValue": "10", "ScalingType": "Auto"},
            ],
        },
        "TrainingJobEarlyStoppingType": early_stopping,
        "RandomSeed": seed,
    }
    if strategy == "Hyperband":
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": rounds}}
    return {
        "HyperParameterTuningJobName": f"bench-{strategy.lower()}-{seed}",
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": "xgboost", "TrainingInputMode": "File"},
            "StaticHyperParameters": {"num_round": str(rounds), "objective": "binary:logistic",
                                      "eval_metric": "auc"},
        },
    }


def booster_params(hyperparameters: dict[str, str]) -> dict[str, Any]:
    return {
        "objective": hyperparameters["objective"], "eval_metric": "auc", "nthread": 2, "verbosity": 0,
        "eta": float(hyperparameters["eta"]), "min_child_weight": float(hyperparameters["min_child_weight"]),
        "alpha": float(hyperparameters["alpha"]), "max_depth": int(hyperparameters["max_depth"]),
    }


class Job:
    """One training job: a booster advanced one round at a time, its curve recorded."""

    def __init__(self, record: TrialRecord, data: tuple[xgb.DMatrix, xgb.DMatrix]) -> None:
        self.record = record
        self.train, self.validation = data
        params = booster_params(dict(record.hyperparameters))
        self.booster = xgb.Booster(params, [self.train, self.validation])
        self.rounds = int(record.hyperparameters["num_round"])
        self.values: list[float] = []
        self.clock: list[float] = []  # cumulative seconds after each round
        self.status = "InProgress"

    def step(self) -> None:
        iteration = len(self.values)
        started = time.perf_counter()
        self.booster.update(self.train, iteration)
        line = self.booster.eval_set([(self.validation, "validation")], iteration)
        self.clock.append((self.clock[-1] if self.clock else 0.0) + time.perf_counter() - started)
        # "[i]\tvalidation-auc:0.91234..." -> the 5-decimal value the log line would carry.
        self.values.append(round(float(line.rsplit(":", 1)[1]), 5))
        if len(self.values) >= self.rounds:
            self.status = "Completed"

    def as_record(self) -> TrialRecord:
        return replace(self.record, status=self.status, intermediate=tuple(self.values),
                       objective=self.values[-1] if self.values else None)


def run(req: dict[str, Any], data: tuple[xgb.DMatrix, xgb.DMatrix], parallel: int) -> RunResult:
    records: list[TrialRecord] = []
    clocks: dict[int, list[float]] = {}
    tuner_seconds = 0.0
    while True:
        started = time.perf_counter()
        tuner = Tuner(req, records)
        if tuner.is_complete():
            tuner_seconds += time.perf_counter() - started
            break
        batch = [TrialRecord(tuner.next_index + k, hp) for k, hp in enumerate(tuner.next_trials(parallel))]
        tuner_seconds += time.perf_counter() - started
        jobs = [Job(record, data) for record in batch]
        tuner_seconds += _train_batch(tuner, records, jobs)
        records.extend(job.as_record() for job in jobs)
        clocks.update((job.record.index, job.clock) for job in jobs)
    best = Tuner(req, records).best()
    assert best is not None and best.objective is not None
    return RunResult(best=best.objective, rounds=sum(len(r.intermediate) for r in records),
                     train_seconds=sum(clock[-1] for clock in clocks.values()), tuner_seconds=tuner_seconds,
                     stopped=sum(r.status == "Stopped" for r in records), records=records, clocks=clocks)


def _train_batch(tuner: Tuner, finished: list[TrialRecord], jobs: list[Job]) -> float:
    """Advance the batch's jobs in lockstep, asking the tuner about each after every round.

    Returns the seconds spent in the tuner.
    """
    tuner_seconds = 0.0
    while any(job.status == "InProgress" for job in jobs):
        active = [job for job in jobs if job.status == "InProgress"]
        for job in active:
            job.step()
        started = time.perf_counter()
        others = [*finished, *(job.as_record() for job in jobs)]
        for job in active:
            if job.status == "InProgress" and tuner.should_stop(job.record.index, job.values, others):
                job.status = "Stopped"
        tuner_seconds += time.perf_counter() - started
    return tuner_seconds


def counterfactual_seconds(off: RunResult, auto: RunResult) -> tuple[float, float]:
    """Training seconds of Off and of Auto, both read from the Off run's per-round clocks.

    With Random search both runs train the same configurations and XGBoost is
    deterministic, so every Auto curve is a prefix of the Off curve of the same trial:
    Auto's cost is Off's clock at the round where Auto stopped. Reading both from one
    run keeps other load on the machine out of the ratio.
    """
    off_seconds = auto_seconds = 0.0
    for stopped in auto.records:
        full = next(r for r in off.records if r.index == stopped.index)
        if tuple(full.intermediate[: len(stopped.intermediate)]) != tuple(stopped.intermediate):
            raise AssertionError(f"trial {stopped.index}: Auto's curve is not a prefix of Off's")
        clock = off.clocks[stopped.index]
        off_seconds += clock[-1]
        auto_seconds += clock[len(stopped.intermediate) - 1]
    return off_seconds, auto_seconds


def summarize(label: str, results: list[RunResult]) -> None:
    bests = " ".join(f"{r.best:.5f}" for r in results)
    train, tuner = sum(r.train_seconds for r in results), sum(r.tuner_seconds for r in results)
    print(f"  {label:<22} mean best {statistics.fmean(r.best for r in results):.5f}  (per seed {bests})  "
          f"rounds {sum(r.rounds for r in results):>6}  train {train:6.1f}s  tuner {tuner:5.1f}s  "
          f"stopped {sum(r.stopped for r in results)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--skip-hyperband", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f} (timings are per-round wall clock)", flush=True)
    data = load_data()
    print(f"Adult: train {data[0].num_row()} x {data[0].num_col()}, validation {data[1].num_row()} rows; "
          f"{args.trials} trials x {args.seeds} seeds, {args.parallel} in parallel, num_round={args.rounds}",
          flush=True)
    plan = [("Bayesian", "Off"), ("Random", "Off"), ("Random", "Auto"), ("Bayesian", "Auto")]
    if not args.skip_hyperband:
        plan.append(("Hyperband", "Off"))
    results: dict[tuple[str, str], list[RunResult]] = {}
    for strategy, early in plan:
        runs = []
        for seed in range(args.seeds):
            req = request(strategy, seed, args.trials, args.parallel, args.rounds, early)
            runs.append(run(req, data, args.parallel))
            print(f"    {strategy}/{early} seed {seed}: best {runs[-1].best:.5f}, "
                  f"{runs[-1].rounds} rounds, {runs[-1].train_seconds:.1f}s", flush=True)
        results[(strategy, early)] = runs
        summarize(f"{strategy} early={early}", runs)
    return report(results, time.perf_counter() - started)


def report(results: dict[tuple[str, str], list[RunResult]], elapsed: float) -> int:
    def mean_best(key: tuple[str, str]) -> float:
        return statistics.fmean(r.best for r in results[key])

    def total(key: tuple[str, str], attr: str) -> float:
        return sum(getattr(r, attr) for r in results[key])

    print("\nResults")
    for key in results:
        summarize(f"{key[0]} early={key[1]}", results[key])
    bayes, random_ = mean_best(("Bayesian", "Off")), mean_best(("Random", "Off"))
    ok_bayes = bayes >= random_
    print(f"\n  Bayesian vs Random: mean best validation:auc {bayes:.5f} vs {random_:.5f} "
          f"({bayes - random_:+.5f})  -> {'PASS' if ok_bayes else 'FAIL'} (target: Bayesian >= Random)")
    off_auto = [counterfactual_seconds(o, a) for o, a in
                zip(results[("Random", "Off")], results[("Random", "Auto")], strict=True)]
    time_saving = 1 - sum(a for _, a in off_auto) / sum(o for o, _ in off_auto)
    ok_stop = True
    for strategy in ("Random", "Bayesian"):
        off, auto = (strategy, "Off"), (strategy, "Auto")
        measured = 1 - total(auto, "train_seconds") / total(off, "train_seconds")
        round_saving = 1 - total(auto, "rounds") / total(off, "rounds")
        gap = mean_best(off) - mean_best(auto)
        line = (f"  {strategy} early stopping Auto vs Off: rounds saved {round_saving:.1%}, "
                f"measured training time saved {measured:.1%}")
        if strategy == "Random":  # the acceptance comparison: identical configurations
            ok_stop = time_saving >= 0.20 and abs(gap) <= 0.002
            line += f", same-clock training time saved {time_saving:.1%}"
        line += f"; mean best {mean_best(auto):.5f} vs {mean_best(off):.5f} (gap {gap:+.5f})"
        if strategy == "Random":
            line += f"  -> {'PASS' if ok_stop else 'FAIL'} (target: >= 20% time saved, gap <= 0.002)"
        print(line)
    hb = ("Hyperband", "Off")
    if hb in results:
        saved = 1 - total(hb, "rounds") / total(("Random", "Off"), "rounds")
        print(f"  Hyperband (MinResource 1, MaxResource = num_round): mean best {mean_best(hb):.5f}, "
              f"rounds -{saved:.1%} vs Random/Off")
    print(f"\n  total wall time {elapsed:.0f}s")
    return 0 if ok_bayes and ok_stop else 1


if __name__ == "__main__":
    sys.exit(main())
