"""The tuning brain: validation, strategies, rebuild from recorded trials, stopping, completion."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from sagestack.tuning import OBJECTIVE_HYPERPARAMETER, TrialRecord, Tuner, TuningValidationError, validate
from sagestack.tuning.completion import best_trial, check_completion, converged, jobs_not_improving
from sagestack.tuning.early_stopping import HyperbandSchedule, median_rule
from sagestack.tuning.space import ParameterSpec, parse_ranges

CONTINUOUS = [
    {"Name": "eta", "MinValue": "0", "MaxValue": "1", "ScalingType": "Auto"},
    {"Name": "alpha", "MinValue": "0.001", "MaxValue": "10", "ScalingType": "Logarithmic"},
]
INTEGER = [{"Name": "max_depth", "MinValue": "1", "MaxValue": "10"}]
CATEGORICAL = [
    {"Name": "tree_method", "Values": ["hist", "approx", "exact"]},
    {"Name": "grow_policy", "Values": ["depthwise", "lossguide"]},
]


def make_request(strategy: str = "Random", *, ranges: dict[str, Any] | None = None, seed: int | None = 7,
                 max_jobs: int | None = 20, parallel: int = 2, early_stopping: str = "Off",
                 objective: str = "Maximize", static: dict[str, str] | None = None,
                 **config: Any) -> dict[str, Any]:
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": parallel}
    if max_jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = max_jobs
    body: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": objective, "MetricName": "validation:auc"},
        "ResourceLimits": limits,
        "ParameterRanges": ranges if ranges is not None else {
            "ContinuousParameterRanges": copy.deepcopy(CONTINUOUS),
            "IntegerParameterRanges": copy.deepcopy(INTEGER),
        },
        "TrainingJobEarlyStoppingType": early_stopping,
        **config,
    }
    if seed is not None:
        body["RandomSeed"] = seed
    return {
        "HyperParameterTuningJobName": "tune-1",
        "HyperParameterTuningJobConfig": body,
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": "xgboost:1.7-1", "TrainingInputMode": "File"},
            "StaticHyperParameters": static if static is not None else {"num_round": "100",
                                                                         "objective": "binary:logistic"},
        },
    }


def grid_request(**kwargs: Any) -> dict[str, Any]:
    return make_request("Grid", ranges={"CategoricalParameterRanges": copy.deepcopy(CATEGORICAL)},
                        max_jobs=kwargs.pop("max_jobs", None), **kwargs)


def hyperband_request(min_resource: int = 1, max_resource: int = 27, **kwargs: Any) -> dict[str, Any]:
    settings = {"HyperbandStrategyConfig": {"MinResource": min_resource, "MaxResource": max_resource}}
    return make_request("Hyperband", StrategyConfig=settings, **kwargs)


def errors_of(request: dict[str, Any]) -> str:
    return " | ".join(validate(request))


def record(index: int, hp: dict[str, str], objective: float | None = None, status: str = "Completed",
           curve: tuple[float, ...] = ()) -> TrialRecord:
    return TrialRecord(index, hp, status, objective, curve)


def run_sequentially(request: dict[str, Any], total: int, batch: int,
                     score: Any = None) -> list[dict[str, str]]:
    """What the reconcile loop does: rebuild a Tuner from the records before each batch."""
    records: list[TrialRecord] = []
    while len(records) < total:
        tuner = Tuner(request, records)
        for k, hp in enumerate(tuner.next_trials(min(batch, total - len(records)))):
            records.append(record(tuner.next_index + k, hp, None if score is None else score(hp)))
    return [dict(r.hyperparameters) for r in records]


# -- validation --------------------------------------------------------------------------


def test_valid_request_has_no_errors() -> None:
    assert validate(make_request()) == []
    assert validate(grid_request()) == []
    assert validate(hyperband_request()) == []
    assert validate(make_request("Bayesian", early_stopping="Auto")) == []


@pytest.mark.parametrize(("entry", "expected"), [
    ({"Name": "eta", "MinValue": "2", "MaxValue": "1"}, "greater than its MaxValue"),
    ({"Name": "eta", "MinValue": "0", "MaxValue": "1", "ScalingType": "Logarithmic"}, "greater than 0"),
    ({"Name": "eta", "MinValue": "-1", "MaxValue": "1", "ScalingType": "Logarithmic"}, "greater than 0"),
    ({"Name": "eta", "MinValue": "0", "MaxValue": "1", "ScalingType": "ReverseLogarithmic"}, "0 <= x < 1.0"),
    ({"Name": "eta", "MinValue": "-0.1", "MaxValue": "0.5", "ScalingType": "ReverseLogarithmic"},
     "0 <= x < 1.0"),
    ({"Name": "eta", "MinValue": "abc", "MaxValue": "1"}, "is not a number"),
    ({"Name": "eta", "MinValue": "0", "MaxValue": "1", "ScalingType": "Cubic"}, "ScalingType 'Cubic'"),
])
def test_bad_continuous_range(entry: dict[str, str], expected: str) -> None:
    request = make_request(ranges={"ContinuousParameterRanges": [entry]})
    assert expected in errors_of(request)
    with pytest.raises(TuningValidationError) as caught:
        Tuner(request)
    assert expected in str(caught.value)


@pytest.mark.parametrize(("entry", "expected"), [
    ({"Name": "d", "MinValue": "10", "MaxValue": "1"}, "greater than its MaxValue"),
    ({"Name": "d", "MinValue": "1.5", "MaxValue": "10"}, "is not an integer"),
    ({"Name": "d", "MinValue": "0", "MaxValue": "10", "ScalingType": "Logarithmic"}, "greater than 0"),
    ({"Name": "d", "MinValue": "0", "MaxValue": "1", "ScalingType": "ReverseLogarithmic"},
     "supported only for continuous"),
])
def test_bad_integer_range(entry: dict[str, str], expected: str) -> None:
    assert expected in errors_of(make_request(ranges={"IntegerParameterRanges": [entry]}))


def test_limits_on_ranges_and_values() -> None:
    many_values = {"CategoricalParameterRanges": [{"Name": "c", "Values": [str(i) for i in range(31)]}]}
    assert "at most 30 are allowed" in errors_of(make_request(ranges=many_values))
    many_ranges = {"ContinuousParameterRanges": [
        {"Name": f"p{i}", "MinValue": "0", "MaxValue": "1"} for i in range(16)],
        "IntegerParameterRanges": [{"Name": f"q{i}", "MinValue": "0", "MaxValue": "1"} for i in range(15)]}
    assert "31 hyperparameters to tune; at most 30" in errors_of(make_request(ranges=many_ranges))
    duplicated = {"ContinuousParameterRanges": copy.deepcopy(CONTINUOUS),
                  "IntegerParameterRanges": [{"Name": "eta", "MinValue": "1", "MaxValue": "2"}]}
    assert "'eta' appears more than once" in errors_of(make_request(ranges=duplicated))
    assert "at least one hyperparameter range" in errors_of(make_request(ranges={}))
    repeated = {"CategoricalParameterRanges": [{"Name": "c", "Values": ["a", "a"]}]}
    assert "more than once" in errors_of(make_request(ranges=repeated))


def test_static_and_tunable_clash_and_hyperparameter_total() -> None:
    assert "both static and tunable" in errors_of(make_request(static={"eta": "0.3", "num_round": "10"}))
    crowded = {f"h{i}": "1" for i in range(97)}  # 97 static + 3 tuned + _tuning_objective_metric
    assert "at most 100 are allowed" in errors_of(make_request(static=crowded))


def test_grid_rules() -> None:
    with_numeric = make_request("Grid", max_jobs=None)
    assert "supports only categorical" in errors_of(with_numeric)
    assert "omit MaxNumberOfTrainingJobs or set it to" in errors_of(grid_request(max_jobs=5))
    assert validate(grid_request(max_jobs=6)) == []
    assert Tuner(grid_request()).max_jobs == 6  # 3 x 2 combinations, inferred
    huge = {"CategoricalParameterRanges": [{"Name": f"c{i}", "Values": [str(v) for v in range(10)]}
                                           for i in range(3)]}
    assert "1000 training jobs" in errors_of(make_request("Grid", ranges=huge, max_jobs=None))


def test_hyperband_rules() -> None:
    assert "must be Off when Strategy is Hyperband" in errors_of(hyperband_request(early_stopping="Auto"))
    no_max = make_request("Hyperband", StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1}})
    assert "could not infer MaxResource" in errors_of(no_max)
    inferred = make_request("Hyperband", static={"epochs": "30"})
    assert Tuner(inferred).max_resource == 30
    inverted = hyperband_request(min_resource=50, max_resource=10)
    assert "must not be greater than MaxResource" in errors_of(inverted)
    assert "the maximum value is 20000" in errors_of(hyperband_request(max_resource=20001))
    assert "only when Strategy is Hyperband" in errors_of(
        make_request("Random", StrategyConfig={"HyperbandStrategyConfig": {"MaxResource": 9}}))


def test_other_request_rules() -> None:
    assert "MaxNumberOfTrainingJobs is required" in errors_of(make_request(max_jobs=None))
    assert "Strategy 'Genetic'" in errors_of(make_request("Genetic"))
    assert "MaxParallelTrainingJobs" in errors_of(make_request(parallel=0))
    criteria = {"BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 2}}
    assert "at least 3" in errors_of(make_request(TuningJobCompletionCriteria=criteria))
    warm = make_request()
    warm["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": f"p{i}"}
                                                                   for i in range(6)],
                               "WarmStartType": "TransferLearning"}
    assert "between 1 and 5 parent" in errors_of(warm)


# -- values and spaces -------------------------------------------------------------------


def test_values_are_formatted_as_sagemaker_strings_and_parse_back() -> None:
    tuner = Tuner(make_request(static={"num_round": "50"}))
    (hp,) = tuner.next_trials(1)
    assert hp["num_round"] == "50"
    assert hp[OBJECTIVE_HYPERPARAMETER] == "validation:auc"
    assert hp["max_depth"].isdigit() and 1 <= int(hp["max_depth"]) <= 10
    assert float(hp["eta"]) == float(repr(float(hp["eta"])))  # repr round-trips exactly
    assert tuner.tuned(hp) == {k: hp[k] for k in ("max_depth", "eta", "alpha")}
    space = tuner.config.space
    assert space.format(space.parse(hp)) == tuner.tuned(hp)


def test_objective_hyperparameter_not_added_for_custom_metric_definitions() -> None:
    request = make_request()
    request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "validation:auc", "Regex": "auc=(\\S+)"}]
    assert OBJECTIVE_HYPERPARAMETER not in Tuner(request).next_trials(1)[0]


def test_scaled_sampling_stays_in_range_and_follows_the_scale() -> None:
    rng = np.random.default_rng(0)
    log = ParameterSpec("a", "Continuous", 0.001, 10.0, "Logarithmic")
    draws = [log.sample(rng) for _ in range(2000)]
    assert all(0.001 <= d <= 10 for d in draws)
    assert 0.4 < np.mean(np.array(draws) < 0.1) < 0.6  # half the draws below 0.1: 2 of 4 decades
    reverse = ParameterSpec("b", "Continuous", 0.0, 0.999, "ReverseLogarithmic")
    draws = [reverse.sample(rng) for _ in range(2000)]
    assert all(0 <= d <= 0.999 for d in draws)
    assert np.mean(np.array(draws) > 0.9) > 0.6  # dense near 1
    integer = ParameterSpec("c", "Integer", 1, 1000, "Logarithmic")
    assert {integer.sample(rng) for _ in range(500)} >= {1, 2}


def test_parse_rejects_points_outside_the_space() -> None:
    space, errors = parse_ranges({"IntegerParameterRanges": INTEGER,
                                  "CategoricalParameterRanges": CATEGORICAL[:1]})
    assert errors == []
    assert space.parse({"max_depth": "11", "tree_method": "hist"}) is None
    assert space.parse({"max_depth": "3", "tree_method": "gpu"}) is None
    assert space.parse({"max_depth": "3"}) is None
    assert space.parse({"max_depth": "3", "tree_method": "hist"}) == {"max_depth": 3, "tree_method": "hist"}


# -- reproducibility and rebuild ---------------------------------------------------------


@pytest.mark.parametrize("strategy", ["Random", "Hyperband"])
def test_random_seed_reproduces_the_sequence(strategy: str) -> None:
    def request(seed: int) -> dict[str, Any]:
        return hyperband_request(seed=seed) if strategy == "Hyperband" else make_request(seed=seed)

    first = Tuner(request(11)).next_trials(5)
    assert first == Tuner(request(11)).next_trials(5)
    assert first != Tuner(request(12)).next_trials(5)
    assert len({hp["eta"] for hp in first}) == 5


def test_without_random_seed_the_job_name_seeds_the_sequence() -> None:
    assert Tuner(make_request(seed=None)).next_trials(3) == Tuner(make_request(seed=None)).next_trials(3)


@pytest.mark.parametrize("request_of", [make_request, hyperband_request, grid_request])
def test_rebuilt_tuner_continues_exactly_like_an_uninterrupted_one(request_of: Any) -> None:
    request = request_of()
    uninterrupted = Tuner(request).next_trials(6)
    # Restart after every pair: each batch comes from a Tuner rebuilt from the records,
    # where earlier trials are finished, failed or still running.
    records: list[TrialRecord] = []
    for batch in range(3):
        tuner = Tuner(request, records)
        statuses = ["Completed", "InProgress"] if batch else ["Failed", "Completed"]
        for k, hp in enumerate(tuner.next_trials(2)):
            records.append(record(tuner.next_index + k, hp, 0.5, statuses[k]))
    assert [dict(r.hyperparameters) for r in records] == uninterrupted


def test_bayesian_rebuild_is_deterministic_and_avoids_duplicates() -> None:
    small = {"IntegerParameterRanges": [{"Name": "d", "MinValue": "1", "MaxValue": "3"}],
             "CategoricalParameterRanges": [{"Name": "c", "Values": ["x", "y", "z"]}]}
    request = make_request("Bayesian", ranges=small, max_jobs=9)
    records: list[TrialRecord] = []
    for _ in range(9):  # a 9-point space, one trial at a time, half of them still running
        tuner = Tuner(request, records)
        assert tuner.next_trials(1) == Tuner(request, records).next_trials(1)
        (hp,) = tuner.next_trials(1)
        status = "InProgress" if len(records) % 2 else "Completed"
        records.append(record(tuner.next_index, hp, float(hp["d"]), status))
    points = {(r.hyperparameters["d"], r.hyperparameters["c"]) for r in records}
    assert len(points) == 9
    assert Tuner(request, records).next_trials(3) == []  # budget spent


def test_bayesian_parallel_asks_do_not_collapse() -> None:
    request = make_request("Bayesian", max_jobs=40)
    records = [record(i, hp, -abs(float(hp["eta"]) - 0.7))
               for i, hp in enumerate(Tuner(request).next_trials(12))]
    batch = Tuner(request, records).next_trials(4)
    etas = sorted(float(hp["eta"]) for hp in batch)
    assert len(set(etas)) == 4
    # Running trials are lies to the sampler: asking again with the batch recorded as
    # running does not return the same four points.
    running = records + [record(12 + k, hp, status="InProgress") for k, hp in enumerate(batch)]
    again = Tuner(request, running).next_trials(4)
    assert not {hp["eta"] for hp in again} & {hp["eta"] for hp in batch}


def test_bayesian_uses_recorded_results() -> None:
    def score(hp: dict[str, str]) -> float:  # peak at eta = 0.8, alpha = 1
        return -((float(hp["eta"]) - 0.8) ** 2) - (math.log10(float(hp["alpha"]))) ** 2 / 16

    def late_error(strategy: str) -> float:
        hps = run_sequentially(make_request(strategy, seed=3, max_jobs=30), 30, 2, score)
        return float(np.mean([-score(hp) for hp in hps[15:]]))

    assert late_error("Bayesian") < 0.5 * late_error("Random")


def test_warm_start_parents_inform_bayesian_and_overall_best() -> None:
    request = make_request("Bayesian")
    request["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "p"}],
                                  "WarmStartType": "IdenticalDataAndAlgorithm"}
    parents = [record(i, hp, float(hp["eta"]))
               for i, hp in enumerate(Tuner(make_request(seed=99)).next_trials(10))]
    cold = Tuner(request).next_trials(2)
    warm = Tuner(request, [], parents).next_trials(2)
    assert cold != warm
    assert all(float(hp["eta"]) > 0.5 for hp in warm)  # TPE exploits the parents' high-eta region
    own = [record(0, cold[0], 0.01)]
    tuner = Tuner(request, own, parents)
    assert tuner.best() == own[0]
    assert tuner.overall_best() == max(parents, key=lambda r: r.objective or 0)


def test_grid_enumerates_every_combination_once_then_completes() -> None:
    request = grid_request(parallel=4)
    tuner = Tuner(request)
    records: list[TrialRecord] = []
    while (batch := Tuner(request, records).next_trials(4)):
        start = len(records)
        records += [record(start + k, hp, 0.1 * (start + k)) for k, hp in enumerate(batch)]
    combos = [(r.hyperparameters["tree_method"], r.hyperparameters["grow_policy"]) for r in records]
    expected = [(t, g) for t in ["hist", "approx", "exact"] for g in ["depthwise", "lossguide"]]
    assert sorted(combos) == sorted(expected)
    assert combos[:2] == [("hist", "depthwise"), ("hist", "lossguide")]  # first parameter varies slowest
    done = Tuner(request, records).is_complete()
    assert done is not None and done.criterion == "MaxNumberOfTrainingJobs" and not done.stop_running
    assert tuner.max_jobs == len(records) == 6


def test_slots_respect_parallelism_and_budget() -> None:
    request = make_request(max_jobs=5, parallel=3)
    hps = Tuner(request).next_trials(5)
    running = [record(i, hp, status="InProgress") for i, hp in enumerate(hps[:2])]
    assert Tuner(request, running).slots() == 1
    finished = [record(i, hp, 0.5) for i, hp in enumerate(hps[:4])]
    assert Tuner(request, finished).slots() == 1
    assert len(Tuner(request, finished).next_trials(3)) == 1


# -- early stopping ----------------------------------------------------------------------


def test_median_rule_on_synthetic_curves() -> None:
    peers = [[0.70, 0.80, 0.90], [0.60, 0.70, 0.80], [0.65, 0.75, 0.85], [0.5, 0.6, 0.7], [0.8, 0.85, 0.9]]
    # Running averages at epoch 2: 0.75, 0.65, 0.70, 0.55, 0.825 -> median 0.70.
    assert median_rule([0.50, 0.69], peers, maximize=True) is not None
    assert median_rule([0.50, 0.71], peers, maximize=True) is None
    assert median_rule([0.50, 0.71], peers, maximize=False) is not None  # a loss of 0.71 is worse
    assert median_rule([0.1], peers[:4], maximize=True) is None  # too few previous jobs
    assert median_rule([0.1, 0.1, 0.1, 0.1], peers, maximize=True) is None  # nobody reached epoch 4


def test_tuner_applies_the_median_rule_to_previous_jobs_only() -> None:
    request = make_request(early_stopping="Auto")
    hps = Tuner(request).next_trials(8)
    good = (0.80, 0.85, 0.90)
    earlier = [record(i, hps[i], good[-1], curve=good) for i in range(5)]
    tuner = Tuner(request, [*earlier, record(5, hps[5], status="InProgress", curve=(0.5, 0.6))])
    assert "median" in (tuner.should_stop(5) or "")
    assert tuner.stop_decisions() == {5: tuner.should_stop(5)}
    assert tuner.should_stop(5, [0.9, 0.95]) is None
    # Jobs launched later are not "previous": trial 2 is judged against trials 0-1 only.
    assert tuner.should_stop(2, [0.1, 0.1]) is None
    assert Tuner(make_request(), earlier).should_stop(5, [0.0, 0.0]) is None  # Off


def test_hyperband_brackets_and_rungs() -> None:
    schedule = HyperbandSchedule(min_resource=1, max_resource=27)
    assert schedule.most_aggressive == 3
    assert schedule.rungs(0) == [1, 3, 9] and schedule.rungs(2) == [9] and schedule.rungs(3) == []
    assert schedule.bracket_weights() == [27, 12, 6, 4]
    brackets = [schedule.bracket_of(5, i) for i in range(400)]
    assert brackets == [schedule.bracket_of(5, i) for i in range(400)]
    assert brackets.count(0) > brackets.count(3) > 0
    assert HyperbandSchedule(3, 27).rungs(0) == [3, 9]  # nothing judged before MinResource


def test_hyperband_promotes_the_top_third_and_stops_the_rest() -> None:
    schedule = HyperbandSchedule(min_resource=1, max_resource=27)
    seed = 5
    in_bracket_0 = [i for i in range(200) if schedule.bracket_of(seed, i) == 0][:7]
    first, *rest = in_bracket_0
    curves = {i: [0.5 + 0.01 * k] * 3 for k, i in enumerate(rest)}  # values 0.50..0.55 at rungs 1 and 3
    # 7 trials at rung 3 -> keep the top 2: values 0.56 and 0.55.
    assert schedule.decide(seed, first, [0.56] * 3, curves, maximize=True) is None
    assert schedule.decide(seed, first, [0.545] * 3, curves, maximize=True) is None  # 2nd of 7
    assert schedule.decide(seed, first, [0.535] * 3, curves, maximize=True) is not None  # 3rd of 7
    assert schedule.decide(seed, first, [0.535] * 3, curves, maximize=False) is not None  # 5th, minimizing
    assert schedule.decide(seed, first, [0.505] * 3, curves, maximize=False) is None  # 2nd, minimizing
    assert schedule.decide(seed, first, [0.1], {}, maximize=True) is None  # alone at its rung
    assert "MaxResource" in (schedule.decide(seed, first, [0.9] * 27, curves, maximize=True) or "")
    other_bracket = next(i for i in range(200) if schedule.bracket_of(seed, i) == 3)
    assert schedule.decide(seed, other_bracket, [0.0] * 20, curves, maximize=True) is None  # no rung < 27


def test_tuner_uses_hyperband_for_stopping() -> None:
    request = hyperband_request(seed=5)
    tuner = Tuner(request)
    assert tuner.max_resource == 27
    hps = tuner.next_trials(2)
    assert "MaxResource" in (Tuner(request).should_stop(0, [0.5] * 27) or "")
    assert hps[0]["num_round"] == "100"  # Hyperband stops jobs; it does not rewrite hyperparameters


# -- completion and ranking --------------------------------------------------------------


def test_best_by_objective_type() -> None:
    trials = [record(0, {}, 0.7), record(1, {}, 0.9), record(2, {}, 0.9), record(3, {}, None),
              record(4, {}, 0.99, status="Failed"), record(5, {}, 0.95, status="InProgress"),
              record(6, {}, 0.2, status="Stopped")]
    assert best_trial(trials, maximize=True).index == 1  # tie -> earliest
    assert best_trial(trials, maximize=False).index == 6  # stopped jobs keep their last value
    assert best_trial([], maximize=True) is None
    tuner = Tuner(make_request(objective="Minimize"), trials)
    assert tuner.best().index == 6


def test_completion_criteria() -> None:
    def values(*objectives: float) -> list[TrialRecord]:
        return [record(i, {}, v) for i, v in enumerate(objectives)]

    spent = check_completion({}, values(0.5, 0.6), max_jobs=2, maximize=True)
    assert spent.criterion == "MaxNumberOfTrainingJobs"
    assert check_completion({}, values(0.5), max_jobs=2, maximize=True) is None
    target = {"TargetObjectiveMetricValue": 0.9}
    hit = check_completion(target, values(0.5, 0.91), max_jobs=10, maximize=True)
    assert hit.criterion == "TargetObjectiveMetricValue" and hit.stop_running
    assert check_completion(target, values(0.5, 0.91), max_jobs=10, maximize=False).criterion \
        == "TargetObjectiveMetricValue"  # 0.5 <= 0.9 when minimizing
    patience = {"BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 3}}
    # 0.805 beats 0.80 by less than 1 %: it does not reset the count.
    assert jobs_not_improving(values(0.5, 0.8, 0.805, 0.7, 0.79), maximize=True) == 3
    assert check_completion(patience, values(0.5, 0.8, 0.805, 0.7, 0.79), 10, True).criterion \
        == "BestObjectiveNotImproving"
    assert check_completion(patience, values(0.5, 0.8, 0.805, 0.7, 0.9), 10, True) is None
    flat = values(*[0.9 + 0.0001 * i for i in range(12)])
    assert converged(flat, maximize=True) and not converged(flat[:9], maximize=True)
    enabled = {"ConvergenceDetected": {"CompleteOnConvergence": "Enabled"}}
    assert check_completion(enabled, flat, 20, True).criterion == "ConvergenceDetected"
    disabled = {"ConvergenceDetected": {"CompleteOnConvergence": "Disabled"}}
    assert check_completion(disabled, flat, 20, True) is None


def test_tuner_stops_suggesting_when_complete() -> None:
    request = make_request(TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 0.95})
    hps = Tuner(request).next_trials(2)
    tuner = Tuner(request, [record(0, hps[0], 0.96), record(1, hps[1], status="InProgress")])
    assert tuner.is_complete().stop_running
    assert tuner.next_trials(2) == [] and tuner.slots() == 0
    assert tuner.jobs_not_improving() == 0


def test_trial_records_accept_mappings() -> None:
    hp = Tuner(make_request()).next_trials(1)[0]
    row = {"index": 0, "hyperparameters": hp, "status": "Completed", "objective": "0.8",
           "intermediate": ["0.7", "0.8"]}
    tuner = Tuner(make_request(), [row])
    assert tuner.best().objective == 0.8 and tuner.best().intermediate == (0.7, 0.8)
    assert tuner.next_index == 1


def test_nan_objectives_are_not_ranked_and_finished_waits_for_running_jobs() -> None:
    request = make_request(max_jobs=2)
    hps = Tuner(request).next_trials(2)
    trials = [record(0, hps[0], float("nan")), record(1, hps[1], status="Pending")]
    tuner = Tuner(request, trials)
    assert tuner.best() is None
    assert tuner.is_complete() is not None and not tuner.finished  # budget spent, one still pending
    assert Tuner(request, [trials[0], record(1, hps[1], 0.4)]).finished
    assert Tuner(make_request("Bayesian", max_jobs=3), trials).next_trials(1)  # NaN replays as FAIL
