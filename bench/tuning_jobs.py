"""Tuning jobs through a real server: parallel efficiency, and what early stopping saves.

Starts a sagestack server, uploads the Adult train/validation channels (the tutorial's
preparation) and runs hyperparameter tuning jobs with boto3, exactly as a client would:

1. **Parallel efficiency.** A 20-trial, 2-parallel Bayesian job over the issue's ranges
   (eta, min_child_weight, alpha, max_depth). Wall time (CreationTime to
   HyperParameterTuningEndTime) against the sum of its trials' training times
   (TrainingEndTime - TrainingStartTime). Two trials always running would give 0.5;
   the gaps between a trial ending and the next starting (the reconcile pass, the next
   suggestion, the Downloading phase) push it up. Target: <= 0.6.
2. **Early stopping.** The same Random search (same RandomSeed, so the same 20
   configurations) with TrainingJobEarlyStoppingType Off and Auto, run side by side, for
   each of ``--seeds`` seeds. Total training time of Auto against Off, at an equal best
   objective (mean over the seeds within 0.002). Target: >= 20 % saved. The median rule
   is a heuristic: on some seeds it stops the job that would have been best (a slow
   starter), so one seed alone says little (bench/tuning_strategies.py measures the rule
   itself over more seeds, without a server).

    .venv/bin/python bench/tuning_jobs.py [--trials 20] [--parallel 2] [--rounds 200] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit"))
import adult_prep  # noqa: E402

from sagestack.testing.roles import execution_role  # noqa: E402
from sagestack.testing.server_process import ServerProcess  # noqa: E402

DATA = ROOT / "examples" / "adult-xgboost" / "data" / "adult.data.gz"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "eta", "MinValue": "0", "MaxValue": "1", "ScalingType": "Auto"},
        {"Name": "min_child_weight", "MinValue": "1", "MaxValue": "10", "ScalingType": "Auto"},
        {"Name": "alpha", "MinValue": "0", "MaxValue": "2", "ScalingType": "Auto"},
    ],
    "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "10", "ScalingType": "Auto"}],
}


def upload(server: ServerProcess, workdir: Path) -> dict[str, str]:
    """Adult train/validation channels in a fresh bucket, and an execution role."""
    local = adult_prep.prepare(DATA, workdir)
    s3 = server.client("s3")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for channel in ("train", "validation"):
        s3.upload_file(str(local[channel]), bucket, f"data/{channel}/{local[channel].name}")
    role = execution_role(server.client("iam"), prefix="bench")
    return {"bucket": bucket, "role": role}


def request(name: str, env: dict[str, str], strategy: str, trials: int, parallel: int, rounds: int, seed: int,
            early_stopping: str = "Off") -> dict[str, Any]:
    def channel(name: str) -> dict[str, Any]:
        uri = f"s3://{env['bucket']}/data/{name}"
        return {"ChannelName": name, "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}}

    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": parallel},
            "ParameterRanges": RANGES,
            "TrainingJobEarlyStoppingType": early_stopping,
            "RandomSeed": seed,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": env["role"],
            "InputDataConfig": [channel("train"), channel("validation")],
            "OutputDataConfig": {"S3OutputPath": f"s3://{env['bucket']}/tuning"},
            "HyperParameterTuningResourceConfig": {"InstanceType": "ml.m4.xlarge", "InstanceCount": 1,
                                                   "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "StaticHyperParameters": {"objective": "binary:logistic", "num_round": str(rounds)},
        },
    }


def run(sm: Any, req: dict[str, Any]) -> dict[str, Any]:
    sm.create_hyper_parameter_tuning_job(**req)
    return finish(sm, req["HyperParameterTuningJobName"])


def finish(sm: Any, name: str) -> dict[str, Any]:
    """Wait for tuning job ``name`` to end; its describe, trials and timing numbers."""
    while True:
        job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if job["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.5)
    if job["HyperParameterTuningJobStatus"] != "Completed":
        raise RuntimeError(f"{name} ended {job['HyperParameterTuningJobStatus']}: {job.get('FailureReason')}")
    trials: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name,
                                                                    MaxResults=100, **token)
        trials += page["TrainingJobSummaries"]
        if "NextToken" not in page:
            break
        token = {"NextToken": page["NextToken"]}
    training = sum((t["TrainingEndTime"] - t["TrainingStartTime"]).total_seconds() for t in trials)
    return {
        "job": job, "trials": trials, "training_seconds": training,
        "wall_seconds": (job["HyperParameterTuningEndTime"] - job["CreationTime"]).total_seconds(),
        "best": job["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
        "stopped": job["TrainingJobStatusCounters"]["Stopped"],
    }


def run_pair(sm: Any, off: dict[str, Any], auto: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Off and Auto side by side, so that both see the same background load on a shared machine.

    Conservative for Auto: once it is done, Off's remaining trials have the cores to themselves.
    """
    sm.create_hyper_parameter_tuning_job(**off)
    sm.create_hyper_parameter_tuning_job(**auto)
    return finish(sm, off["HyperParameterTuningJobName"]), finish(sm, auto["HyperParameterTuningJobName"])


def report_parallel(result: dict[str, Any], parallel: int) -> bool:
    ratio = result["wall_seconds"] / result["training_seconds"]
    ok = ratio <= 0.6
    print(f"\n1. Parallel efficiency ({len(result['trials'])} Bayesian trials, {parallel} in parallel)")
    print(f"   wall {result['wall_seconds']:.1f}s, sum of trial training times {result['training_seconds']:.1f}s "
          f"-> ratio {ratio:.3f}  {'PASS' if ok else 'FAIL'} (target <= 0.6; 1/{parallel} = {1 / parallel:.2f} "
          f"is the ideal)")
    print(f"   best validation:auc {result['best']:.5f}", flush=True)
    return ok


def report_seed(seed: int, off: dict[str, Any], auto: dict[str, Any]) -> None:
    saved = 1 - auto["training_seconds"] / off["training_seconds"]
    print(f"   seed {seed}: Off training {off['training_seconds']:6.1f}s (wall {off['wall_seconds']:5.1f}s) "
          f"best {off['best']:.5f} | Auto training {auto['training_seconds']:6.1f}s (wall "
          f"{auto['wall_seconds']:5.1f}s) best {auto['best']:.5f}, {auto['stopped']:2d} stopped | "
          f"saved {saved:.1%}, best {auto['best'] - off['best']:+.5f}", flush=True)


def report_early_stopping(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> bool:
    off_seconds = sum(off["training_seconds"] for off, _ in pairs)
    auto_seconds = sum(auto["training_seconds"] for _, auto in pairs)
    saved = 1 - auto_seconds / off_seconds
    gap = statistics.fmean(auto["best"] - off["best"] for off, auto in pairs)
    ok = saved >= 0.2 and abs(gap) <= 0.002
    print(f"   total: Off {off_seconds:.1f}s, Auto {auto_seconds:.1f}s of training -> saved {saved:.1%}; "
          f"mean best objective {gap:+.5f}  {'PASS' if ok else 'FAIL'} (target >= 20% saved, best within 0.002)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.trials} trials, {args.parallel} in parallel, "
          f"num_round={args.rounds}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            env = upload(server, Path(tmp) / "adult")
            sm = server.client("sagemaker")
            common = (args.trials, args.parallel, args.rounds)
            bayes = run(sm, request("bench-bayesian", env, "Bayesian", *common, 0))
            ok_parallel = report_parallel(bayes, args.parallel)
            print(f"\n2. Early stopping Off vs Auto (same Random configurations, {args.seeds} seeds)", flush=True)
            pairs = []
            for seed in range(args.seeds):
                off, auto = run_pair(sm, request(f"bench-off-{seed}", env, "Random", *common, seed),
                                     request(f"bench-auto-{seed}", env, "Random", *common, seed, early_stopping="Auto"))
                report_seed(seed, off, auto)
                pairs.append((off, auto))
            ok_early = report_early_stopping(pairs)
        finally:
            server.stop()
    return 0 if ok_parallel and ok_early else 1


if __name__ == "__main__":
    sys.exit(main())
