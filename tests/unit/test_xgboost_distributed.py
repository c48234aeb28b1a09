"""Several training instances of one job, as local processes joined by XGBoost's collective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost as xgb

from tests.unit import xgboost_job as job

HPS = {"objective": "binary:logistic", "num_round": "30", "max_depth": "4", "eta": "0.3"}
CHANNELS = {
    "train": job.channel_config(S3DistributionType="ShardedByS3Key"),
    "validation": job.channel_config(),
}


def run_cluster(tmp_path: Path, shards: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                validation: tuple[np.ndarray, np.ndarray] | None) -> dict[str, job.Run]:
    """Start one process per host (each with its own train shards) and wait for all of them."""
    hosts = sorted(shards)
    channels = CHANNELS if validation is not None else {"train": CHANNELS["train"]}
    port = job.free_port_pair()
    env = {"SAGESTACK_TRACKER_HOST": "127.0.0.1", "SAGESTACK_TRACKER_PORT": str(port),
           "SAGESTACK_COLLECTIVE_TIMEOUT": "60"}
    started = {}
    for host in hosts:
        root = job.make_instance(tmp_path / host, HPS, channels, host=host, hosts=hosts)
        for number, (y, x) in enumerate(shards[host]):
            job.write_csv(root / f"input/data/train/part-{host}-{number}.csv", y, x)
        if validation is not None:
            job.write_csv(root / "input/data/validation/validation.csv", *validation)
        started[host] = (job.start(root, env), root)
    return {host: job.finish(process, root, timeout=120) for host, (process, root) in started.items()}


def accuracy(model: Path, y: np.ndarray, x: np.ndarray) -> float:
    booster = xgb.Booster()
    booster.load_model(bytearray(model.read_bytes()))
    return float(((booster.predict(xgb.DMatrix(x)) > 0.5) == y).mean())


def test_two_hosts_train_one_model_on_their_shards(tmp_path: Path) -> None:
    y, x = job.binary_problem(3000, seed=11)
    holdout = (y[2400:], x[2400:])
    # algo-2 gets a harder slice than algo-1, so a model that missed it would show
    shards = {"algo-1": [(y[:1200], x[:1200])], "algo-2": [(y[1200:1800], x[1200:1800]), (y[1800:2400], x[1800:2400])]}
    runs = run_cluster(tmp_path / "dist", shards, validation=holdout)
    for host, result in runs.items():
        assert result.returncode == 0, (host, result.stdout)
        assert result.failure is None
    master, worker = runs["algo-1"], runs["algo-2"]
    assert len(master.round_lines()) == 30 and worker.round_lines() == []
    assert master.model_path.exists() and not worker.model_path.exists()
    # each host read only its own files, yet the model is trained on all rows
    assert "Train matrix has 1200 rows" in master.stdout and "Train matrix has 1200 rows" in worker.stdout
    distributed_accuracy = accuracy(master.model_path, *holdout)
    assert distributed_accuracy > 0.9

    single = job.make_instance(tmp_path / "single", HPS, CHANNELS)
    job.write_csv(single / "input/data/train/all.csv", y[:2400], x[:2400])
    job.write_csv(single / "input/data/validation/validation.csv", *holdout)
    alone = job.run(single)
    assert alone.returncode == 0, alone.stdout
    assert abs(accuracy(alone.model_path, *holdout) - distributed_accuracy) < 0.02
    # the all-reduced training metric is the metric of the whole data set
    last_distributed = float(master.round_lines()[-1].split("train-logloss:")[1].split("#011")[0])
    last_single = float(alone.round_lines()[-1].split("train-logloss:")[1].split("#011")[0])
    assert abs(last_distributed - last_single) < 0.02


def test_hosts_without_data_leave_and_the_first_host_with_data_is_master(tmp_path: Path) -> None:
    y, x = job.binary_problem(1500, seed=12)
    shards = {"algo-1": [], "algo-2": [(y[:600], x[:600])], "algo-3": [(y[600:1200], x[600:1200])]}
    runs = run_cluster(tmp_path, shards, validation=(y[1200:], x[1200:]))
    for host, result in runs.items():
        assert result.returncode == 0, (host, result.stdout)
    assert "Host algo-1 does not have data" in runs["algo-1"].stdout
    assert [h for h, r in runs.items() if r.model_path.exists()] == ["algo-2"]
    assert len(runs["algo-2"].round_lines()) == 30 and runs["algo-3"].round_lines() == []
    assert accuracy(runs["algo-2"].model_path, y[1200:], x[1200:]) > 0.9


def test_a_single_host_with_data_trains_alone(tmp_path: Path) -> None:
    y, x = job.binary_problem(800, seed=13)
    runs = run_cluster(tmp_path, {"algo-1": [(y, x)], "algo-2": []}, validation=None)
    assert runs["algo-1"].returncode == 0 and runs["algo-2"].returncode == 0
    assert "Only host algo-1 has data" in runs["algo-1"].stdout
    assert runs["algo-1"].model_path.exists() and not runs["algo-2"].model_path.exists()


def test_a_host_with_bad_data_stops_the_others(tmp_path: Path) -> None:
    y, x = job.binary_problem(400, seed=14)
    port = job.free_port_pair()
    env = {"SAGESTACK_TRACKER_HOST": "127.0.0.1", "SAGESTACK_TRACKER_PORT": str(port)}
    hosts = ["algo-1", "algo-2"]
    started = {}
    for index, host in enumerate(hosts):
        root = job.make_instance(tmp_path / host, HPS, {"train": CHANNELS["train"]}, host=host, hosts=hosts)
        path = job.write_csv(root / "input/data/train/part.csv", y[index::2], x[index::2])
        if host == "algo-2":
            with path.open("a") as fh:
                fh.write("1,2,3,x,5,6\n")
        started[host] = (job.start(root, env), root)
    runs = {host: job.finish(process, root, timeout=120) for host, (process, root) in started.items()}
    assert runs["algo-2"].returncode == 1
    assert runs["algo-2"].failure.startswith("Line 201 '1,2,3,x,5,6...' of file 'train/part.csv' is not 'CSV' format.")
    assert runs["algo-1"].returncode == 1
    assert runs["algo-1"].failure == "Host(s) algo-2 failed before training; stopping."
    assert not runs["algo-1"].model_path.exists()


def test_a_host_failing_during_training_stops_the_others_at_once(tmp_path: Path) -> None:
    # accuracy needs class labels: algo-2's shard has a 0.5 label, which only its metric sees
    y, x = job.binary_problem(400, seed=15)
    y2 = y[200:].copy()
    y2[7] = 0.5
    hps = {"objective": "reg:squarederror", "num_round": "20", "eval_metric": "accuracy"}
    port = job.free_port_pair()
    env = {"SAGESTACK_TRACKER_HOST": "127.0.0.1", "SAGESTACK_TRACKER_PORT": str(port)}
    hosts = ["algo-1", "algo-2"]
    started = {}
    for host, labels, rows in (("algo-1", y[:200], x[:200]), ("algo-2", y2, x[200:])):
        root = job.make_instance(tmp_path / host, hps, {"train": CHANNELS["train"]}, host=host, hosts=hosts)
        job.write_csv(root / "input/data/train/part.csv", labels, rows)
        started[host] = (job.start(root, env), root)
    runs = {host: job.finish(process, root, timeout=60) for host, (process, root) in started.items()}
    assert runs["algo-2"].returncode == 1
    assert runs["algo-2"].failure.startswith("Metric 'accuracy' needs class labels 0..1")
    assert runs["algo-1"].returncode == 1
    assert runs["algo-1"].failure.startswith("Lost the other hosts during training"), runs["algo-1"].stdout
