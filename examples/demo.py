"""`make demo`: run the SageMaker XGBoost tutorial end to end on an embedded sagestack server.

Starts a server on a free loopback port with its own data dir under
demo-output/, then does what the tutorial's reader does: creates an execution
role and a notebook instance, opens Jupyter through the presigned URL, uploads
the tutorial notebook (examples/adult-xgboost/tutorial.ipynb) and runs it cell
by cell in the instance's conda_python3 kernel. It copies the metrics, plots
and reports back, deletes the notebook instance, prints a summary, checks that
nothing was left behind, stops the server and exits non-zero on any failure.

DEMO_QUICK=1: fewer rounds and trials (CI). DEMO_MODE=script: run
tutorial.py in a local process instead of inside a notebook instance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagestack.authz.role_templates import create_execution_role  # noqa: E402
from sagestack.sdk_config import sdk_config_yaml  # noqa: E402
from sagestack.testing.server_process import ServerProcess  # noqa: E402

OUT = Path(os.environ.get("DEMO_OUTPUT", ROOT / "demo-output")).resolve()
TUTORIAL = ROOT / "examples" / "adult-xgboost" / "tutorial.py"
NOTEBOOK = ROOT / "examples" / "adult-xgboost" / "tutorial.ipynb"
DATA = ROOT / "examples" / "adult-xgboost" / "data" / "adult.data.gz"
INSTANCE = "Sagemaker-XGBoost"
# What the seed's run on SageMaker took, for the summary (minutes; from the tutorial and its screenshots).
SAGEMAKER_MINUTES = {"notebook instance": "~3-5", "training job": "~3-4", "endpoint": "~4.5"}


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def sdk_config(path: Path, bucket: str) -> Path:
    """What a notebook instance configures: no telemetry, a default bucket (no STS call to AWS)."""
    path.write_text(sdk_config_yaml(bucket))
    return path


def delete_emptied_bucket(server: ServerProcess, bucket: str) -> None:
    """The notebook empties the bucket, as the seed does; its role may not delete it, so the user does."""
    s3 = server.client("s3")
    if any(b["Name"] == bucket for b in s3.list_buckets()["Buckets"]) and \
            not s3.list_objects_v2(Bucket=bucket).get("KeyCount"):
        s3.delete_bucket(Bucket=bucket)
        say(f"deleted the emptied bucket {bucket} with the admin key")


def leftovers(server: ServerProcess, bucket: str) -> list[str]:
    sm, s3 = server.client("sagemaker"), server.client("s3")
    found = [f"endpoint {e['EndpointName']}" for e in sm.list_endpoints()["Endpoints"]]
    found += [f"endpoint config {c['EndpointConfigName']}" for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    found += [f"model {m['ModelName']}" for m in sm.list_models()["Models"]]
    found += [f"bucket {b['Name']}" for b in s3.list_buckets()["Buckets"] if b["Name"] == bucket]
    found += [f"notebook instance {n['NotebookInstanceName']}"
              for n in sm.list_notebook_instances()["NotebookInstances"]]
    return found


def tutorial_knobs(quick: bool) -> dict[str, str]:
    return {"TUTORIAL_NUM_ROUND": "30" if quick else "100", "TUTORIAL_MAX_JOBS": "2" if quick else "4"}


def run_script(server: ServerProcess, bucket: str, quick: bool) -> dict:
    """DEMO_MODE=script: the tutorial as a local process (creates its own role and notebook instance)."""
    env = server.subprocess_env({
        "TUTORIAL_OUTPUT": str(OUT), "TUTORIAL_BUCKET": bucket, **tutorial_knobs(quick),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config(OUT / "sagemaker-config.yaml", bucket)),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "PYTHONUNBUFFERED": "1",
    })
    say("running the tutorial (examples/adult-xgboost/tutorial.py) ...")
    code = subprocess.call([sys.executable, str(TUTORIAL)], env=env, cwd=OUT)
    if code != 0:
        raise RuntimeError(f"the tutorial failed with exit code {code}; server log: {server.log_path}")
    return json.loads((OUT / "metrics.json").read_text())


def run_in_notebook_instance(server: ServerProcess, quick: bool) -> dict:
    """Step 1 as the console does it, then the tutorial notebook inside the instance."""
    from sagestack.testing.notebook_client import JupyterSession

    sm, iam = server.client("sagemaker"), server.client("iam")
    started = time.perf_counter()
    # The console's "Create a new role" with "Any S3 bucket" (also: `sagestack role create --any-bucket`).
    role = create_execution_role(iam, None, datetime.now(UTC))
    sm.create_notebook_instance(NotebookInstanceName=INSTANCE, InstanceType="ml.t2.medium", RoleArn=role)
    while (status := sm.describe_notebook_instance(NotebookInstanceName=INSTANCE)["NotebookInstanceStatus"]) \
            == "Pending":
        time.sleep(0.2)
    if status != "InService":
        raise RuntimeError(f"notebook instance {INSTANCE} is {status}")
    step1 = time.perf_counter() - started
    say(f"notebook instance {INSTANCE} InService in {step1:.1f} s; opening Jupyter with the presigned URL")
    jupyter = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=INSTANCE)["AuthorizedUrl"])
    try:
        jupyter.api("PUT", "contents/data", json={"type": "directory"})
        jupyter.put_bytes("data/adult.data.gz", DATA.read_bytes())
        notebook = json.loads(NOTEBOOK.read_text())
        jupyter.put_notebook_document("tutorial.ipynb", notebook)
        kernel = jupyter.start_kernel("tutorial.ipynb")
        say(f"running tutorial.ipynb in the {kernel.name} kernel of {INSTANCE} ...")
        knobs = {**tutorial_knobs(quick), "TUTORIAL_OUTPUT": "tutorial-output"}
        kernel.execute(f"import os; os.environ.update({knobs!r})")
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            result = kernel.execute("".join(cell["source"]), timeout=1800)
            if result.stdout:
                print(result.stdout, end="", flush=True)
            if result.status != "ok":
                raise RuntimeError(f"a notebook cell failed:\n{result.error or result.stderr}")
        kernel.close()
        metrics = json.loads(jupyter.get_text("tutorial-output/metrics.json"))
        metrics["plots"] = [_copy_back(jupyter, "tutorial-output", p) for p in metrics["plots"]]
        metrics["reports"] = [_copy_back(jupyter, "tutorial-output/reports", p) for p in metrics["reports"]]
    finally:
        jupyter.close()
    started = time.perf_counter()
    sm.stop_notebook_instance(NotebookInstanceName=INSTANCE)
    while sm.describe_notebook_instance(NotebookInstanceName=INSTANCE)["NotebookInstanceStatus"] != "Stopped":
        time.sleep(0.2)
    sm.delete_notebook_instance(NotebookInstanceName=INSTANCE)
    sm.get_waiter("notebook_instance_deleted").wait(NotebookInstanceName=INSTANCE,
                                                    WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    metrics["timings_s"] = {"1. notebook instance (create -> InService)": round(step1, 2), **metrics["timings_s"],
                            "7. stop and delete the notebook instance": round(time.perf_counter() - started, 2)}
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _copy_back(jupyter: object, folder: str, path: str) -> str:
    """Fetch a file the notebook wrote in the instance into demo-output/."""
    name = Path(path).name
    target = OUT / ("reports" if "reports" in folder else "") / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(jupyter.get_bytes(f"{folder}/{name}"))  # type: ignore[attr-defined]
    return str(target)


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
        try:
            if os.environ.get("DEMO_MODE") == "script":
                metrics = run_script(server, bucket, quick)
            else:
                metrics = run_in_notebook_instance(server, quick)
        except Exception as exc:
            say(f"FAILED: {exc}; server log: {server.log_path}")
            return 1
        delete_emptied_bucket(server, bucket)
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
