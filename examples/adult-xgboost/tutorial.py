"""Train, tune, deploy and evaluate XGBoost on the UCI Adult data with Amazon SageMaker.

The classic SageMaker notebook, as a script: nothing in it knows about
sagestack. Point the usual AWS environment variables (AWS_ENDPOINT_URL, keys,
region) at any SageMaker-compatible endpoint and run it. Outputs (metrics,
plots, reports) go to $TUTORIAL_OUTPUT (default ./tutorial-output).

Knobs for quick runs: TUTORIAL_NUM_ROUND (100), TUTORIAL_MAX_JOBS (4),
TUTORIAL_MAX_PARALLEL_JOBS (2), TUTORIAL_ROLE_ARN (skip creating a role),
TUTORIAL_BUCKET (default: the SageMaker session's default bucket), TUTORIAL_NOTEBOOK=0
(skip the notebook instance, e.g. when this already runs inside one).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
import botocore.exceptions
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import sagemaker
from sagemaker import image_uris
from sagemaker.debugger import ProfilerRule, Rule, rule_configs
from sagemaker.inputs import TrainingInput
from sagemaker.serializers import CSVSerializer
from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "adult.data.gz"
OUT = Path(os.environ.get("TUTORIAL_OUTPUT", "tutorial-output")).resolve()
NUM_ROUND = int(os.environ.get("TUTORIAL_NUM_ROUND", "100"))
MAX_JOBS = int(os.environ.get("TUTORIAL_MAX_JOBS", "4"))
MAX_PARALLEL = int(os.environ.get("TUTORIAL_MAX_PARALLEL_JOBS", "2"))
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income"]
TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}

timings: dict[str, float] = {}


def step(name: str):
    """Decorator-free timing helper: ``with step("train"): ...``."""

    class _Step:
        def __enter__(self) -> None:
            self.start = time.perf_counter()
            print(f"\n== {name}", flush=True)

        def __exit__(self, *exc: object) -> None:
            timings[name] = round(time.perf_counter() - self.start, 2)
            print(f"   ({timings[name]:.1f} s)", flush=True)

    return _Step()


# ---------------------------------------------------------------- step 1: role (and notebook instance)
def create_execution_role() -> str:
    """An execution role that may use any S3 bucket, as the console's "Create a new role" makes."""
    if os.environ.get("TUTORIAL_ROLE_ARN"):
        return os.environ["TUTORIAL_ROLE_ARN"]
    iam = boto3.client("iam")
    name = f"AmazonSageMaker-ExecutionRole-{time.strftime('%Y%m%dT%H%M%S')}"
    role = iam.create_role(RoleName=name, Path="/service-role/",
                           AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))["Role"]
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonS3FullAccess")
    return role["Arn"]


def create_notebook_instance(role: str) -> str:
    """Step 1 of the tutorial: a notebook instance with the role, ready when InService."""
    sm = boto3.client("sagemaker")
    name = os.environ.get("TUTORIAL_NOTEBOOK_NAME", "Sagemaker-XGBoost")
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t2.medium", RoleArn=role)
    while (status := sm.describe_notebook_instance(NotebookInstanceName=name)["NotebookInstanceStatus"]) == "Pending":
        time.sleep(1)
    if status != "InService":
        raise RuntimeError(f"notebook instance {name} is {status}")
    url = sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"]
    print(f"   notebook instance {name} is InService; open Jupyter at {url}")
    return name


def delete_notebook_instance(name: str) -> None:
    sm = boto3.client("sagemaker")
    sm.stop_notebook_instance(NotebookInstanceName=name)
    while sm.describe_notebook_instance(NotebookInstanceName=name)["NotebookInstanceStatus"] != "Stopped":
        time.sleep(1)
    sm.delete_notebook_instance(NotebookInstanceName=name)


# ---------------------------------------------------------------- step 2: data
def prepare_data(workdir: Path) -> dict[str, Path]:
    """Label first, one-hot categoricals, 80/20 train/test split, header-less CSV."""
    raw = pd.read_csv(DATA, header=None, names=COLUMNS, skipinitialspace=True)
    label = (raw.pop("income").str.strip() == ">50K").astype(int)
    model_data = pd.concat([label.rename("y"), pd.get_dummies(raw, dtype=float)], axis=1)
    shuffled = model_data.sample(frac=1, random_state=1729)
    cut = int(0.8 * len(shuffled))
    train_all, test = shuffled.iloc[:cut], shuffled.iloc[cut:]
    cut = int(0.8 * len(train_all))
    train, validation = train_all.iloc[:cut], train_all.iloc[cut:]
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("train", train), ("validation", validation), ("test", test)):
        paths[name] = workdir / f"{name}.csv"
        frame.to_csv(paths[name], header=False, index=False)
    print(f"   train {len(train)}, validation {len(validation)}, test {len(test)} rows, "
          f"{model_data.shape[1] - 1} features")
    return paths


def upload(session: sagemaker.Session, bucket: str, prefix: str, paths: dict[str, Path]) -> dict[str, str]:
    boto3.client("s3").create_bucket(Bucket=bucket)
    return {name: session.upload_data(str(path), bucket=bucket, key_prefix=f"{prefix}/{name}")
            for name, path in paths.items()}


# ---------------------------------------------------------------- step 3: train and tune
def make_estimator(session: sagemaker.Session, role: str, bucket: str, prefix: str,
                   rules: list | None = None) -> sagemaker.estimator.Estimator:
    container = image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
    estimator = sagemaker.estimator.Estimator(
        container, role, instance_count=1, instance_type="ml.m4.xlarge",
        output_path=f"s3://{bucket}/{prefix}/output", sagemaker_session=session, rules=rules,
    )
    estimator.set_hyperparameters(max_depth=5, eta=0.2, gamma=4, min_child_weight=6, subsample=0.8,
                                  objective="binary:logistic", num_round=NUM_ROUND, eval_metric="auc")
    return estimator


def validation_auc(job_name: str) -> float:
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    return next(m["Value"] for m in job["FinalMetricDataList"] if m["MetricName"] == "validation:auc")


# ---------------------------------------------------------------- step 5: evaluate
def evaluate(scores: np.ndarray, labels: np.ndarray) -> dict:
    predicted = (scores > 0.5).astype(int)
    matrix = pd.crosstab(index=labels, columns=predicted, rownames=["actual"], colnames=["predicted"])
    tn, fp, fn, tp = (int(matrix.loc[a, p]) if a in matrix.index and p in matrix.columns else 0
                      for a, p in ((0, 0), (0, 1), (1, 0), (1, 1)))
    cutoffs = np.arange(0.01, 1, 0.01)
    # Log loss of *thresholded* predictions, as the original notebook computes it (clipped at 1e-15).
    losses = [_log_loss(labels, np.where(scores > c, 1, 0)) for c in cutoffs]
    best = int(np.argmin(losses))
    metrics = {
        "accuracy": (tp + tn) / len(labels),
        "precision_le_50k": tn / max(tn + fn, 1),
        "precision_gt_50k": tp / max(tp + fp, 1),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "best_cutoff": round(float(cutoffs[best]), 2),
        "min_log_loss": round(float(losses[best]), 4),
        "test_rows": len(labels),
    }
    _plot_confusion(matrix)
    _plot_log_loss(cutoffs, losses, metrics)
    return metrics


def _log_loss(labels: np.ndarray, predicted: np.ndarray, eps: float = 1e-15) -> float:
    p = np.clip(predicted.astype(float), eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def _plot_confusion(matrix: pd.DataFrame) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(matrix.values, cmap="Blues")
    dark = matrix.values.max() / 2
    for (i, j), value in np.ndenumerate(matrix.values):
        ax.text(j, i, f"{value}", ha="center", va="center", fontsize=14, color="white" if value > dark else "black")
    ax.set_xticks(range(matrix.shape[1]), ["<=50K", ">50K"][: matrix.shape[1]])
    ax.set_yticks(range(matrix.shape[0]), ["<=50K", ">50K"][: matrix.shape[0]])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (cutoff 0.5)")
    fig.tight_layout()
    fig.savefig(OUT / "confusion_matrix.png", dpi=120)
    plt.close(fig)


def _plot_log_loss(cutoffs: np.ndarray, losses: list[float], metrics: dict) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(cutoffs, losses)
    ax.axvline(metrics["best_cutoff"], color="red", linestyle="--",
               label=f"best cutoff {metrics['best_cutoff']} (log loss {metrics['min_log_loss']:.2f})")
    ax.set_xlabel("cutoff")
    ax.set_ylabel("log loss")
    ax.set_title("Log loss of thresholded predictions vs cutoff")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "log_loss_vs_cutoff.png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- step 6: reports
def download_reports(bucket: str, prefix: str, job_name: str) -> list[str]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/output/{job_name}/rule-output/")
    reports = []
    for item in listing.get("Contents", []):
        if item["Key"].endswith(".html"):
            target = OUT / "reports" / Path(item["Key"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
            reports.append(str(target))
    return reports


def main() -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    region = boto3.Session().region_name
    with step("1. execution role and notebook instance"):
        role = create_execution_role()
        notebook = create_notebook_instance(role) if os.environ.get("TUTORIAL_NOTEBOOK", "1") == "1" else None
    session = sagemaker.Session()
    bucket = os.environ.get("TUTORIAL_BUCKET") or session.default_bucket()
    prefix = "sagemaker/xgboost-adult"
    with step("2. prepare and upload the data"):
        uploaded = upload(session, bucket, prefix, prepare_data(OUT / "data"))
        inputs = {c: TrainingInput(uploaded[c], content_type="csv") for c in ("train", "validation")}

    with step("3a. train"):
        rules = [ProfilerRule.sagemaker(rule_configs.ProfilerReport()),
                 Rule.sagemaker(rule_configs.create_xgboost_report())]
        xgb = make_estimator(session, role, bucket, prefix, rules)
        xgb.fit(inputs)
        trained_job = xgb.latest_training_job.name
    with step("3b. tune (Bayesian)"):
        tuner = HyperparameterTuner(
            make_estimator(session, role, bucket, prefix), "validation:auc",
            {"eta": ContinuousParameter(0, 1), "min_child_weight": ContinuousParameter(1, 10),
             "alpha": ContinuousParameter(0, 2), "max_depth": IntegerParameter(1, 10)},
            max_jobs=MAX_JOBS, max_parallel_jobs=MAX_PARALLEL, strategy="Bayesian",
        )
        tuner.fit(inputs)
        best_job = tuner.best_training_job()
        chosen = best_job if validation_auc(best_job) > validation_auc(trained_job) else trained_job
        print(f"   trained {trained_job}: auc {validation_auc(trained_job):.4f}; "
              f"tuned best {best_job}: auc {validation_auc(best_job):.4f}; keeping {chosen}")

    with step("4. deploy and predict"):
        model = sagemaker.estimator.Estimator.attach(chosen, sagemaker_session=session)
        predictor = model.deploy(initial_instance_count=1, instance_type="ml.m4.xlarge",
                                 serializer=CSVSerializer())
        test = np.loadtxt(OUT / "data" / "test.csv", delimiter=",")
        labels, features = test[:, 0], test[:, 1:]
        scores = np.concatenate([
            np.array(predictor.predict(chunk).decode("utf-8").replace(",", "\n").split(), dtype=float)
            for chunk in np.array_split(features, max(1, len(features) // 500))
        ])
    with step("5. evaluate"):
        metrics = evaluate(scores, labels)
        print(f"   accuracy {metrics['accuracy']:.4f}; precision <=50K {metrics['precision_le_50k']:.2f}, "
              f">50K {metrics['precision_gt_50k']:.2f}; best cutoff {metrics['best_cutoff']} "
              f"(log loss {metrics['min_log_loss']:.2f})")
        print(f"   confusion matrix: {metrics['confusion_matrix']}")
    with step("6. debugger and profiler reports"):
        reports = download_reports(bucket, prefix, trained_job)
        for report in reports:
            print(f"   {report}")

    with step("7. clean up"):
        predictor.delete_model()
        predictor.delete_endpoint(delete_endpoint_config=True)
        bucket_to_delete = boto3.resource("s3").Bucket(bucket)
        bucket_to_delete.objects.all().delete()
        try:
            bucket_to_delete.delete()
        except botocore.exceptions.ClientError as error:
            # The console's execution role may empty buckets but not delete them (AmazonSageMakerFullAccess
            # has no s3:DeleteBucket): the seed deletes the objects only. Delete it with your own key.
            print(f"   kept the empty bucket {bucket}: {error.response['Error']['Code']}")
        if notebook is not None:
            delete_notebook_instance(notebook)

    result = {"region": region, "trained_job": trained_job, "tuned_best_job": best_job, "deployed_job": chosen,
              "endpoint": predictor.endpoint_name, "bucket": bucket, "reports": reports,
              "plots": [str(OUT / "confusion_matrix.png"), str(OUT / "log_loss_vs_cutoff.png")],
              "timings_s": timings, **metrics}
    (OUT / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
