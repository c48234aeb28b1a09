"""Training-job overhead: CreateTrainingJob → Completed against the same training in one process.

Runs the tutorial job (Adult data, the tutorial's hyperparameters) through a
real server several times and measures, from the Describe timestamps, the time
from CreationTime to TrainingEndTime; then trains the same model in this
process with xgboost on the same files (loading included) and reports the
difference as the platform's overhead. Also times 10x and 100x the Adult rows
and samples the peak RSS of the training process tree.

Target (issue 4): overhead <= 1.0 s for the tutorial job (SageMaker: about two minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training instances run (see train.py)

import numpy as np
import pandas as pd
import psutil
import xgboost as xgb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagestack.testing.server_process import ServerProcess  # noqa: E402
from tests.integration.training_support import (  # noqa: E402
    TUTORIAL_HYPERPARAMETERS,
    adult_bucket,
    channel,
    execution_role,
    training_request,
    unique,
    wait_for_job,
)


def in_process(train_csv: Path, validation_csv: Path) -> float:
    started = time.perf_counter()
    train = pd.read_csv(train_csv, header=None).to_numpy(np.float32)
    validation = pd.read_csv(validation_csv, header=None).to_numpy(np.float32)
    dtrain = xgb.DMatrix(train[:, 1:], label=train[:, 0])
    dval = xgb.DMatrix(validation[:, 1:], label=validation[:, 0])
    params = {k: v for k, v in TUTORIAL_HYPERPARAMETERS.items() if k != "num_round"}
    xgb.train(params, dtrain, num_boost_round=int(TUTORIAL_HYPERPARAMETERS["num_round"]),
              evals=[(dtrain, "train"), (dval, "validation")], verbose_eval=False)
    return time.perf_counter() - started


class PeakRss:
    """Peak RSS of every process below the server (the training instances)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            total = 0
            for child in self.root.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_job(server: ServerProcess, role: str, bucket: str, uris: dict[str, str]) -> tuple[float, float]:
    sm = server.client("sagemaker")
    name = unique("bench")
    channels = [channel("train", uris["train"]), channel("validation", uris["validation"])]
    sm.create_training_job(**training_request(name, role, bucket, channels))
    job = wait_for_job(sm, name, timeout=3600)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    total = (job["TrainingEndTime"] - job["CreationTime"]).total_seconds()
    training = (job["TrainingEndTime"] - job["TrainingStartTime"]).total_seconds()
    return total, training


def scaled(server: ServerProcess, data: dict, factor: int, workdir: Path) -> dict[str, str]:
    """Upload the train split repeated ``factor`` times (validation unchanged)."""
    s3 = server.client("s3")
    big = workdir / f"train-x{factor}.csv"
    text = Path(data["local"]["train"]).read_bytes()
    with open(big, "wb") as handle:
        for _ in range(factor):
            handle.write(text)
    s3.upload_file(str(big), data["bucket"], f"x{factor}/train/train.csv")
    big.unlink()
    return {"train": f"s3://{data['bucket']}/x{factor}/train", "validation": data["uris"]["validation"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scales", default="10,100", help="row multipliers to time (empty: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            data = adult_bucket(server, Path(tmp) / "adult")
            role = execution_role(server)
            local = [in_process(data["local"]["train"], data["local"]["validation"]) for _ in range(args.repeat)]
            jobs = [run_job(server, role, data["bucket"], data["uris"]) for _ in range(args.repeat)]
            base = statistics.median(local)
            total = statistics.median(j[0] for j in jobs)
            print(f"in-process xgboost.train (load + train)      median {base:6.2f} s over {args.repeat}")
            print(f"CreateTrainingJob -> Completed (Describe)    median {total:6.2f} s over {args.repeat}")
            print(f"job overhead                                  {total - base:6.2f} s   (target <= 1.0 s)")
            for factor in [int(f) for f in args.scales.split(",") if f]:
                uris = scaled(server, data, factor, Path(tmp))
                assert server.proc is not None
                with PeakRss(server.proc.pid) as rss:
                    total, training = run_job(server, role, data["bucket"], uris)
                print(f"{factor:4d}x Adult rows ({factor * 20838:,} train rows): job {total:7.1f} s, "
                      f"training {training:7.1f} s, peak instance RSS {rss.peak / 2**20:7.0f} MiB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
