"""Built-in XGBoost training, end to end: one instance process on an /opt/ml-shaped tree."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from sagestack.algorithms.xgboost.metrics import metric_definitions
from tests.unit import adult_prep
from tests.unit import xgboost_job as job

REPO = Path(__file__).resolve().parents[2]
ADULT_COPIES = (
    REPO / "examples" / "adult-xgboost" / "data" / "adult.data.gz",
    REPO.parent / "shared" / "datasets" / "adult" / "adult.data.gz",
)
BASIC_HPS = {"objective": "binary:logistic", "num_round": "20", "max_depth": "3"}
# Jobs run inside the test process share its OpenMP runtime, which spins while waiting
# (the trainer's own processes make it sleep): one thread keeps them fast on a busy machine.
IN_PROCESS = {"nthread": "1"}
CSV_CHANNELS = {"train": job.channel_config(), "validation": job.channel_config()}
ROUND_LINE = re.compile(r"^\[(\d+)\](#011(train|validation)-[a-z0-9@_.-]+:-?\d+\.\d{5})+$")


def load_booster(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(bytearray(path.read_bytes()))
    return booster


def accuracy(booster: xgb.Booster, y: np.ndarray, x: np.ndarray) -> float:
    return float(((booster.predict(xgb.DMatrix(x)) > 0.5) == y).mean())


@pytest.fixture
def csv_job(tmp_path: Path) -> Path:
    root = job.make_instance(tmp_path, BASIC_HPS, CSV_CHANNELS)
    y, x = job.binary_problem(600)
    job.write_csv(root / "input/data/train/part-0.csv", y[:250], x[:250])
    job.write_csv(root / "input/data/train/nested/dir/part-1.csv", y[250:500], x[250:500])
    job.write_csv(root / "input/data/validation/val.csv", y[500:], x[500:])
    return root


def test_csv_training_logs_rounds_and_saves_a_model(csv_job: Path) -> None:
    result = job.run(csv_job)
    assert result.returncode == 0, result.stdout
    assert result.failure is None
    lines = result.round_lines()
    assert [int(ROUND_LINE.match(line).group(1)) for line in lines] == list(range(20))
    assert lines[0].startswith("[0]#011train-logloss:") and "#011validation-logloss:" in lines[0]
    assert "Train matrix has 500 rows and 5 columns" in result.stdout
    # the platform's metric regexes find the last value in the log
    regexes = {d["Name"]: re.compile(d["Regex"]) for d in metric_definitions()}
    last = float(regexes["validation:logloss"].match(lines[-1]).group(1))
    assert 0 < last < 0.5
    booster = load_booster(result.model_path)
    assert booster.num_boosted_rounds() == 20
    y, x = job.binary_problem(600)
    assert accuracy(booster, y[500:], x[500:]) > 0.85


def test_libsvm_is_the_default_content_type(tmp_path: Path) -> None:
    channels = {"train": job.channel_config(content_type=None)}
    root = job.make_instance(tmp_path, {**BASIC_HPS, **IN_PROCESS, "eval_metric": "error,auc"}, channels)
    y, x = job.binary_problem(400, seed=3)
    job.write_libsvm(root / "input/data/train/data.libsvm", y, x)
    result = job.run_in_process(root)
    assert result.returncode == 0, result.stdout
    assert re.match(r"^\[0\]#011train-error:\d\.\d{5}#011train-auc:\d\.\d{5}$", result.round_lines()[0])
    assert accuracy(load_booster(result.model_path), y, x) > 0.85


def test_early_stopping_uses_the_tuning_objective_and_keeps_the_best_round(tmp_path: Path) -> None:
    hps = {
        **BASIC_HPS,
        **IN_PROCESS,
        "num_round": "300",
        "eta": "0.5",
        "max_depth": "6",
        "early_stopping_rounds": "5",
        "eval_metric": "logloss",
        "_tuning_objective_metric": "validation:accuracy",
    }
    root = job.make_instance(tmp_path, hps, CSV_CHANNELS)
    y, x = job.binary_problem(400, seed=5)
    job.write_csv(root / "input/data/train/t.csv", y[:300], x[:300])
    job.write_csv(root / "input/data/validation/v.csv", y[300:], x[300:])
    result = job.run_in_process(root)
    assert result.returncode == 0, result.stdout
    lines = result.round_lines()
    assert 5 < len(lines) < 300
    # the objective joins eval_metric (sorted union); accuracy is computed by the container
    assert re.search(r"#011validation-accuracy:\d\.\d{5}", lines[0])
    assert "#011train-logloss:" in lines[0]
    scores = [float(re.search(r"validation-accuracy:(\S+)", line).group(1)) for line in lines]
    best = int(np.argmax(scores))  # first best round, as xgboost keeps it
    assert len(lines) == best + 1 + 5
    assert load_booster(result.model_path).num_boosted_rounds() == best + 1


def test_multiclass_with_weights_and_container_metrics(tmp_path: Path) -> None:
    hps = {**IN_PROCESS, "objective": "multi:softprob", "num_class": "3", "num_round": "15", "csv_weights": "1",
           "eval_metric": "merror,f1,balanced_accuracy"}
    root = job.make_instance(tmp_path, hps, CSV_CHANNELS)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 4))
    y = np.digitize(x[:, 0] + 0.3 * x[:, 1], [-0.5, 0.5]).astype(float)
    weights = np.where(y == 2, 2.0, 1.0)
    job.write_csv(root / "input/data/train/t.csv", y[:500], np.column_stack([weights[:500], x[:500]]))
    job.write_csv(root / "input/data/validation/v.csv", y[500:], np.column_stack([weights[500:], x[500:]]))
    result = job.run_in_process(root)
    assert result.returncode == 0, result.stdout
    last = result.round_lines()[-1]
    for name in ("train-merror", "train-f1", "train-balanced_accuracy", "validation-merror", "validation-f1"):
        assert f"#011{name}:" in last
    booster = load_booster(result.model_path)
    predicted = booster.predict(xgb.DMatrix(x[500:])).argmax(axis=1)
    assert (predicted == y[500:]).mean() > 0.85


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"objective": "binary:logistic"}, "Missing required hyperparameter: num_round"),
        ({"num_round": "10", "silent": "1"}, "Extraneous hyperparameter found: silent"),
        (
            {"num_round": "10", "max_depth": "5.0"},
            "Hyperparameter max_depth: could not parse value (caused by ValueError)",
        ),
        ({"num_round": "10", "learning_rate": "1.5"}, "Hyperparameter eta: 1.5 is not in [0, 1]"),
        (
            {"num_round": "10", "objective": "multi:softmax"},
            "Require input for parameter 'num_class' for multi-classification",
        ),
    ],
)
def test_bad_hyperparameters_fail_with_the_containers_message(
    tmp_path: Path, hyperparameters: dict[str, str], message: str
) -> None:
    root = job.make_instance(tmp_path, hyperparameters, CSV_CHANNELS)
    result = job.run_in_process(root)
    assert result.returncode == 1
    assert result.failure == message
    assert not result.model_path.exists()


def _failing_jobs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Several broken jobs (each fails before training)."""
    y, x = job.binary_problem(50)
    cases: dict[str, tuple[Path, str]] = {}

    root = job.make_instance(tmp_path / "missing", BASIC_HPS, {"validation": job.channel_config()})
    cases["missing train"] = (root, "Missing required channel: train")

    root = job.make_instance(tmp_path / "extra", BASIC_HPS, {**CSV_CHANNELS, "test": job.channel_config()})
    cases["extra channel"] = (root, "Extraneous channel found: test")

    root = job.make_instance(tmp_path / "badline", BASIC_HPS, {"train": job.channel_config()})
    job.write_csv(root / "input/data/train/a.csv", y, x)
    with (root / "input/data/train/a.csv").open("a") as fh:
        fh.write("1,0.5,oops,3,4,5\n")
    cases["bad data line"] = (
        root,
        "Line 51 '1,0.5,oops,3,4,5...' of file 'train/a.csv' is not 'CSV' format. "
        "Please ensure the file is in 'CSV' format. (column 3 value 'oops' is not a number)",
    )

    root = job.make_instance(tmp_path / "empty", BASIC_HPS, CSV_CHANNELS)
    job.write_csv(root / "input/data/train/a.csv", y, x)
    (root / "input/data/validation/empty.csv").write_text("")
    cases["empty validation"] = (root, "No data in validation channel path /opt/ml/input/data/validation")

    root = job.make_instance(tmp_path / "label", BASIC_HPS, {"train": job.channel_config()})
    job.write_csv(root / "input/data/train/a.csv", np.where(np.arange(50) == 7, 3.0, y), x)
    cases["bad label"] = (
        root,
        "Invalid label 3 on line 8 of file 'train/a.csv': label must be in [0,1] for logistic regression "
        "(objective binary:logistic).",
    )

    root = job.make_instance(tmp_path / "ctype", BASIC_HPS, {"train": job.channel_config("application/json")})
    cases["content type"] = (root, "application/json is not an accepted ContentType: csv, libsvm, parquet")
    return cases


def test_user_errors_write_the_failure_file_and_exit_non_zero(tmp_path: Path) -> None:
    for name, (root, message) in _failing_jobs(tmp_path).items():
        result = job.run_in_process(root)
        assert result.returncode == 1, (name, result.stdout)
        assert result.failure is not None and result.failure.startswith(message), (name, result.failure)
        assert "Traceback" not in result.failure
        assert not result.model_path.exists()


def test_adult_tutorial_reaches_the_published_accuracy(tmp_path: Path) -> None:
    adult = next((path for path in ADULT_COPIES if path.exists()), None)
    if adult is None:
        pytest.skip("adult.data.gz not available")
    files = adult_prep.prepare(adult, tmp_path / "prepared")
    hps = {
        "max_depth": "5",
        "eta": "0.2",
        "gamma": "4",
        "min_child_weight": "6",
        "subsample": "0.8",
        "objective": "binary:logistic",
        "num_round": "100",
    }
    root = job.make_instance(tmp_path / "opt_ml", hps, CSV_CHANNELS)
    for name in ("train", "validation"):
        files[name].rename(root / "input" / "data" / name / files[name].name)
    result = job.run(root)
    assert result.returncode == 0, result.stdout
    assert len(result.round_lines()) == 100
    test = np.loadtxt(files["test"], delimiter=",", dtype=np.float32)
    assert test.shape[0] == 6513
    assert accuracy(load_booster(result.model_path), test[:, 0], test[:, 1:]) >= 0.86
