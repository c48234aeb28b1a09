"""`make demo`: run the SageMaker XGBoost tutorial end to end on an embedded sagestack server.

Starts a server on a free loopback port with its own data dir under
demo-output/, runs examples/adult-xgboost/tutorial.py against it exactly as a
SageMaker user would (only the AWS environment points elsewhere), prints a
summary, checks that nothing was left behind, stops the server, and exits
non-zero on any failure. Quick mode for CI: DEMO_QUICK=1 (fewer rounds/trials).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagestack.launcher import ServerProcess  # noqa: E402

OUT = Path(os.environ.get("DEMO_OUTPUT", ROOT / "demo-output")).resolve()
TUTORIAL = ROOT / "examples" / "adult-xgboost" / "tutorial.py"
# What the seed's run on SageMaker took, for the summary (minutes; from the tutorial and its screenshots).
SAGEMAKER_MINUTES = {"notebook instance": "~3-5", "training job": "~3-4", "endpoint": "~4.5"}


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def sdk_config(path: Path, bucket: str) -> Path:
    """What a notebook instance configures: no telemetry, a default bucket (no STS call to AWS)."""
    path.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
        f"      Session:\n        DefaultS3Bucket: {bucket}\n"
    )
    return path


def leftovers(server: ServerProcess, bucket: str) -> list[str]:
    sm, s3 = server.client("sagemaker"), server.client("s3")
    found = [f"endpoint {e['EndpointName']}" for e in sm.list_endpoints()["Endpoints"]]
    found += [f"endpoint config {c['EndpointConfigName']}" for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    found += [f"model {m['ModelName']}" for m in sm.list_models()["Models"]]
    found += [f"bucket {b['Name']}" for b in s3.list_buckets()["Buckets"] if b["Name"] == bucket]
    return found


def run() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    started = time.perf_counter()
    say("starting the sagestack server ...")
    server = ServerProcess(OUT / "sagestack-data").start()
    say(f"server ready at {server.url} in {time.perf_counter() - started:.1f} s (data dir {server.data_dir})")
    try:
        account = server.client("sts").get_caller_identity()["Account"]
        bucket = f"sagemaker-{server.env['AWS_DEFAULT_REGION']}-{account}"
        quick = os.environ.get("DEMO_QUICK") == "1"
        env = server.subprocess_env({
            "TUTORIAL_OUTPUT": str(OUT),
            "TUTORIAL_BUCKET": bucket,
            "TUTORIAL_NUM_ROUND": "30" if quick else "100",
            "TUTORIAL_MAX_JOBS": "2" if quick else "4",
            "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config(OUT / "sagemaker-config.yaml", bucket)),
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
            "PYTHONUNBUFFERED": "1",
        })
        say("running the tutorial (examples/adult-xgboost/tutorial.py) ...")
        code = subprocess.call([sys.executable, str(TUTORIAL)], env=env, cwd=OUT)
        if code != 0:
            say(f"the tutorial failed with exit code {code}; server log: {server.log_path}")
            return 1
        metrics = json.loads((OUT / "metrics.json").read_text())
        left = leftovers(server, bucket)
        metrics["leftovers"] = left
        (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2))
        summary(metrics)
        failures = []
        if metrics["accuracy"] < 0.86:
            failures.append(f"accuracy {metrics['accuracy']:.4f} < 0.86")
        if left:
            failures.append(f"left behind: {', '.join(left)}")
        for failure in failures:
            say(f"FAILED: {failure}")
        return 1 if failures else 0
    finally:
        server.stop()
        say(f"server stopped; total {time.perf_counter() - started:.1f} s")


def summary(metrics: dict) -> None:
    say("summary")
    for name, seconds in metrics["timings_s"].items():
        print(f"    {name:38s} {seconds:7.1f} s")
    print(f"    accuracy {metrics['accuracy']:.4f} on {metrics['test_rows']} test rows "
          f"(the seed reports 0.87 on SageMaker)")
    print(f"    precision <=50K {metrics['precision_le_50k']:.2f}, >50K {metrics['precision_gt_50k']:.2f}")
    print(f"    confusion matrix {metrics['confusion_matrix']}")
    print(f"    best cutoff {metrics['best_cutoff']} with log loss {metrics['min_log_loss']:.2f} (seed: 0.54, 4.43)")
    print(f"    plots: {', '.join(metrics['plots'])}")
    print(f"    reports: {', '.join(metrics['reports']) or 'none'}")
    print(f"    metrics: {OUT / 'metrics.json'}")
    print(f"    left behind: {', '.join(metrics['leftovers']) or 'nothing'}")
    print(f"    on SageMaker the seed waited minutes per step: {SAGEMAKER_MINUTES}")


if __name__ == "__main__":
    raise SystemExit(run())
