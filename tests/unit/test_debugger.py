"""Debugger and profiler: sampler, training hook, built-in rules, runner and HTML reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from sagestack.debugger.data import JobData
from sagestack.debugger.hook import SaveSpec, make_callbacks, plan_collections, record_phase
from sagestack.debugger.profiler import SystemSampler, mark_job_end, system_file_path
from sagestack.debugger.rules import ERROR, IN_PROGRESS, ISSUES, NO_ISSUES, RULES, evaluate
from sagestack.debugger.runner import initial_statuses, run_rules, run_rules_by_kind

REPORT_COLLECTIONS = ("metrics", "feature_importance", "predictions", "labels", "hyperparameters", "trees")
TUTORIAL = {"max_depth": 5, "eta": 0.2, "gamma": 4, "min_child_weight": 6, "subsample": 0.8}


def hook_config(interval: str = "1", collections: tuple[str, ...] = REPORT_COLLECTIONS) -> dict[str, Any]:
    return {"S3OutputPath": "s3://bucket/debug",
            "CollectionConfigurations": [{"CollectionName": c, "CollectionParameters": {"save_interval": interval}}
                                         for c in collections]}


def train_job(job: Path, X: np.ndarray, y: np.ndarray, params: dict[str, Any], rounds: int, *,
              interval: str = "1", n_valid: int | None = None, profile: bool = True) -> Path:
    """Train in-process with the sagestack callbacks, the way train.py does; returns the job dir."""
    nv = n_valid or len(y) // 4
    dtrain, dvalid = xgb.DMatrix(X[nv:], y[nv:]), xgb.DMatrix(X[:nv], y[:nv])
    params = {"seed": 1, "nthread": 1, **params}
    hps = {k: str(v) for k, v in params.items()}
    record_phase(job, "DataLoading", time.time() - 0.2, time.time())
    callbacks = make_callbacks(job, hook_config(interval), {"DisableProfiler": False} if profile else None,
                               dtrain, dvalid, hps)
    xgb.train(params, dtrain, rounds, evals=[(dtrain, "train"), (dvalid, "validation")], callbacks=callbacks,
              verbose_eval=False)
    return job


def rich_binary(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels from a smooth, interacting signal: trees keep improving for many rounds without overfitting."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10))
    f = 2.0 * np.sin(1.5 * X[:, 0]) + 1.5 * X[:, 1] * X[:, 2] + 0.8 * X[:, 3] ** 2 - 0.8 + 0.7 * X[:, 4]
    return X, (rng.random(n) < 1 / (1 + np.exp(-f))).astype(np.float32)


@pytest.fixture(scope="module")
def healthy_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X, y = rich_binary(20_000)
    return train_job(tmp_path_factory.mktemp("healthy") / "job", X, y,
                     {"objective": "binary:logistic", **TUTORIAL}, 30, interval="5")


@pytest.fixture(scope="module")
def overfit_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1600, 10))
    y = (rng.random(1600) < 0.5).astype(np.float32)  # pure noise: anything learnt is overfitting
    return train_job(tmp_path_factory.mktemp("overfit") / "job", X, y,
                     {"objective": "binary:logistic", "max_depth": 8, "eta": 1.0, "min_child_weight": 0}, 15)


# ------------------------------------------------------------------ sampler


def test_sampler_writes_sagemaker_layout_for_a_busy_child(tmp_path: Path) -> None:
    busy = "import time\nend = time.time() + 1.2\nwhile time.time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", busy])
    sampler = SystemSampler(lambda: [child.pid], 100, tmp_path / "profiler-output").start()
    child.wait()
    time.sleep(0.25)
    sampler.stop()
    files = sorted((tmp_path / "profiler-output" / "system" / "incremental").glob("*/*"))
    assert files and sampler.samples >= 8
    records = []
    for path in files:
        epoch = int(path.name.split(".")[0])
        assert path.name == f"{epoch}.algo-1.json" and epoch % 60 == 0
        assert path.parent.name == datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H")
        assert path == system_file_path(tmp_path / "profiler-output", epoch, "algo-1")
        records += [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(r) == {"Type", "Name", "Dimension", "Value", "NodeId", "Timestamp"} for r in records)
    kinds = {(r["Type"], r["Name"], r["Dimension"]) for r in records}
    assert ("cpu", "cpu0", "CPUUtilization") in kinds and ("cpu", "cpu0", "I/OWaitPercentage") in kinds
    assert ("memory", "MemoryUsedPercent", "") in kinds
    assert ("network", "ReceiveBytesPerSecond", "Platform") in kinds
    assert not any(r["Dimension"].startswith("GPU") for r in records)  # no GPU here: nothing written
    cores = [r["Value"] for r in records if r["Name"] == "ProcessCPUCores"]
    assert max(cores) > 0.3  # the busy loop shows up in the process-tree CPU
    per_sample = {r["Timestamp"] for r in records if r["Dimension"] == "CPUUtilization"}
    assert len([r for r in records if r["Dimension"] == "CPUUtilization"]) == len(per_sample) * os.cpu_count()
    assert not list((tmp_path / "profiler-output").rglob(".*"))  # no temporary files left behind


def test_sampler_restarted_in_the_same_minute_keeps_earlier_records(tmp_path: Path) -> None:
    sampler = SystemSampler(lambda: [os.getpid()], 500, tmp_path)
    sampler.sample()
    sampler.flush()
    sampler.sample()
    sampler.sample()
    sampler.flush()
    lines = [line for f in sampler.files_written for line in f.read_text().splitlines()]
    stamps = {json.loads(line)["Timestamp"] for line in set(lines) if '"MemoryUsedPercent"' in line}
    assert len(stamps) >= 2  # minute file rewritten with old + new records (unless a minute boundary passed)
    mark_job_end(tmp_path)
    assert (tmp_path / "system" / "training_job_end.ts").is_file()
    assert (tmp_path / "framework" / "training_job_end.ts").is_file()


# ------------------------------------------------------------------ hook


def test_collection_plan_merges_duplicates_and_aliases() -> None:
    plan = plan_collections({"HookParameters": {"save_interval": "7"}, "CollectionConfigurations": [
        {"CollectionName": "metrics", "CollectionParameters": {"save_interval": "10"}},
        {"CollectionName": "metrics", "CollectionParameters": {"save_interval": "5"}},
        {"CollectionName": "losses", "CollectionParameters": {"save_interval": "500"}},
        {"CollectionName": "tree", "CollectionParameters": {"save_steps": "1,3"}},
        {"CollectionName": "custom", "CollectionParameters": {"include_regex": ".*labels|.*predictions"}},
        {"CollectionName": "gradients"},
        {"CollectionName": "feature_importance", "CollectionParameters": {"eval.save_interval": "4",
                                                                          "train.save_interval": "6"}},
    ]})
    assert plan is not None
    assert plan.due(5) >= {"metrics"} and "metrics" in plan.due(10) and "metrics" not in plan.due(7)
    assert plan.due(3) == {"trees"}
    assert "labels" in plan.due(7) and "predictions" in plan.due(14)  # custom: hook-level interval 7
    assert "feature_importance" in plan.due(4) and "feature_importance" in plan.due(6)
    assert plan.ignored == ["gradients"]
    default = plan_collections({"CollectionConfigurations": []})
    assert default is not None and default.specs == {"metrics": [SaveSpec(interval=10)]}
    assert plan_collections(None) is None
    assert SaveSpec(interval=5, start=10, end=20).due(15) and not SaveSpec(interval=5, start=10, end=20).due(20)


def test_hook_writes_framework_events_and_collections(healthy_job: Path) -> None:
    debug = healthy_job / "debug-output"
    index = [json.loads(line) for line in (debug / "index.jsonl").read_text().splitlines()]
    assert [r["step"] for r in index] == [0, 5, 10, 15, 20, 25, 29]  # the last round is always saved
    assert set(index[0]["collections"]) == set(REPORT_COLLECTIONS)
    assert "hyperparameters" not in index[1]["collections"]  # constant: written once
    meta = json.loads((debug / "meta.json").read_text())
    assert meta["objective"] == "binary:logistic" and meta["predictions_dataset"] == "validation"
    fi = json.loads((debug / "feature_importance" / "step-000029.json").read_text())
    assert set(fi["types"]) == {"weight", "gain", "cover", "total_gain", "total_cover"}
    assert abs(sum(fi["types"]["gain"].values()) - 1) < 1e-6
    with np.load(debug / "predictions" / "step-000029.npz") as z:
        assert z["predictions"].shape == (5000,)
    data = JobData(healthy_job)
    assert len(data.debug.trees_until(29)) == 30
    assert set(data.debug.metrics) == {"train-logloss", "validation-logloss"}
    names = {e.name for e in data.framework}
    assert {"DataLoading", "Step", "Evaluation", "DebugSave", "TrainingLoop"} <= names
    steps = data.events("Step")
    assert [e.step for e in steps] == list(range(30)) and all(e.duration > 0 for e in steps)
    assert all(e.phase == "EVAL" for e in data.events("Evaluation"))


def test_hook_restores_the_booster_and_costs_nothing_without_config(tmp_path: Path) -> None:
    X, y = rich_binary(500)
    assert make_callbacks(tmp_path, None, None, None, None, {}) == []
    assert make_callbacks(tmp_path, None, {"DisableProfiler": True}, None, None, {}) == []
    dtrain = xgb.DMatrix(X, y)
    bst = xgb.train({"nthread": 1}, dtrain, 3, callbacks=make_callbacks(tmp_path, None, {}, dtrain, None, {}))
    assert "update" not in vars(bst)
    assert not (tmp_path / "debug-output").exists()


# ------------------------------------------------------------------ rules


def test_healthy_run_has_no_loss_or_overfit_issues(healthy_job: Path) -> None:
    data = JobData(healthy_job)
    for rule in ("LossNotDecreasing", "Overfit"):
        result = evaluate(rule, {"rule_to_invoke": rule}, data)
        assert result.status == NO_ISSUES, result.status_details
    assert evaluate("ClassImbalance", {}, data).status == NO_ISSUES


def test_deep_trees_on_noise_overfit_and_overtrain(overfit_job: Path) -> None:
    data = JobData(overfit_job)
    overfit = evaluate("Overfit", {}, data)
    assert overfit.status == ISSUES and overfit.status_details.startswith("RuleEvaluationConditionMet")
    assert overfit.triggered >= 1 and overfit.step is not None
    assert evaluate("Overtraining", {}, data).status == ISSUES
    assert evaluate("TreeDepth", {}, data).status == ISSUES
    assert evaluate("TreeDepth", {"depth": "8"}, data).status == NO_ISSUES
    # A larger ratio threshold makes the same data pass: parameters arrive as strings.
    assert evaluate("Overfit", {"ratio_threshold": "1e9"}, data).status == NO_ISSUES


def test_loss_not_decreasing_fires_on_a_flat_loss(tmp_path: Path) -> None:
    X, y = rich_binary(3000)
    job = train_job(tmp_path / "job", X, y, {"objective": "binary:logistic", "eta": 1e-4}, 25)
    result = evaluate("LossNotDecreasing", {"num_steps": "10"}, JobData(job))
    assert result.status == ISSUES and result.step == 10
    assert result.details["mode"] == "EVAL"
    assert evaluate("LossNotDecreasing", {"mode": "TRAIN", "diff_percent": "0"}, JobData(job)).status == NO_ISSUES


def test_one_dominant_feature_and_imbalanced_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 6))
    y = (X[:, 0] + 0.05 * rng.normal(size=3000) > 0).astype(np.float32)
    job = train_job(tmp_path / "dominant", X, y, {"objective": "binary:logistic", "max_depth": 3}, 10)
    data = JobData(job)
    assert evaluate("FeatureImportanceOverweight", {}, data).status == ISSUES
    assert evaluate("Confusion", {}, data).status == NO_ISSUES  # near-perfect classifier
    assert evaluate("ClassImbalance", {}, data).status == NO_ISSUES

    y_rare = (rng.random(3000) < 0.04).astype(np.float32)
    job = train_job(tmp_path / "imbalanced", X, y_rare, {"objective": "binary:logistic", "max_depth": 3}, 10)
    result = evaluate("ClassImbalance", {}, JobData(job))
    assert result.status == ISSUES and "ratio" in result.status_details
    assert evaluate("ClassImbalance", {"threshold_imbalance": "100", "threshold_misprediction": "1"},
                    JobData(job)).status == NO_ISSUES


def test_gpu_rules_without_gpu_and_bad_configurations(healthy_job: Path) -> None:
    data = JobData(healthy_job)
    for rule in ("CPUBottleneck", "IOBottleneck", "LowGPUUtilization", "GPUMemoryIncrease", "BatchSize",
                 "LoadBalancing"):
        result = evaluate(rule, {}, data)
        assert result.status == NO_ISSUES and "No GPU" in result.status_details
    assert evaluate("NoSuchRule", {}, data).status == ERROR
    bad = evaluate("Overfit", {"patience": "two"}, data)
    assert bad.status == ERROR and "patience" in bad.status_details
    assert evaluate("Overfit", {"tensor_regex": "(["}, data).status == ERROR
    assert {"LossNotDecreasing", "Overfit", "Overtraining", "ClassImbalance", "Confusion",
            "FeatureImportanceOverweight", "TreeDepth", "StepOutlier", "MaxInitializationTime",
            "OverallSystemUsage"} <= set(RULES)


def test_gpu_rules_say_not_applicable_in_the_report(healthy_job: Path) -> None:
    data = JobData(healthy_job)
    gpu = evaluate("LowGPUUtilization", {}, data)
    assert gpu.status == NO_ISSUES and not gpu.applicable and "not applicable" in gpu.status_details
    assert gpu.report_json()["Applicable"] is False
    assert evaluate("StepOutlier", {}, data).applicable
    run_rules(healthy_job, [], rule_configs("ProfilerReport"), final=True, job_name="healthy")
    out = healthy_job / "rule-output" / "ProfilerReport" / "profiler-output"
    page = (out / "profiler-report.html").read_text()
    card = re.search(r"<h4>LowGPUUtilization (<span[^>]*>[^<]*</span>)</h4>", page)
    assert card is not None and card.group(1) == '<span class="badge na">Not applicable</span>'
    assert "No GPU on this platform: not applicable" in page
    assert json.loads((out / "profiler-reports" / "GPUMemoryIncrease.json").read_text())["Applicable"] is False


def write_system(profiler: Path, rows: list[tuple[float, str, str, str, float]]) -> None:
    path = system_file_path(profiler, int(rows[0][0] // 60 * 60), "algo-1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"Type": t, "Name": n, "Dimension": d, "Value": v, "NodeId": "algo-1",
                                        "Timestamp": ts}) + "\n" for ts, t, n, d, v in rows))


def write_events(profiler: Path, events: list[dict[str, Any]]) -> None:
    path = profiler / "framework" / "events" / "algo-1-1.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"NodeId": "algo-1", "Pid": 1, **e}) + "\n" for e in events))


def test_profiler_rules_on_synthetic_timelines(tmp_path: Path) -> None:
    t0 = 1_700_000_040.0
    rows = []
    for i in range(200):  # GPU idle while the CPU is saturated: a CPU bottleneck
        ts = t0 + i * 0.5
        rows += [(ts, "cpu", "cpu0", "CPUUtilization", 97.0), (ts, "cpu", "cpu0", "I/OWaitPercentage", 1.0),
                 (ts, "gpu", "gpu0", "GPUUtilization", 3.0), (ts, "gpu", "gpu0", "GPUMemoryUtilization", 20.0)]
    write_system(tmp_path / "profiler-output", rows)
    durations = [0.1] * 150 + [2.0] * 12 + [0.1] * 138
    start = t0 + 1900  # first step 31.6 minutes after the job started
    events, t = [], start
    for step, d in enumerate(durations):
        events.append({"Name": "Step", "Phase": "TRAIN", "Step": step, "StartTime": t, "EndTime": t + d})
        t += d
    write_events(tmp_path / "profiler-output", events)
    data = JobData(tmp_path, job_start=t0)
    assert evaluate("CPUBottleneck", {"patience": "0"}, data).status == ISSUES
    assert evaluate("IOBottleneck", {"patience": "0"}, data).status == NO_ISSUES
    assert evaluate("LowGPUUtilization", {"patience": "0"}, data).status == ISSUES
    assert evaluate("BatchSize", {"patience": "0"}, data).status == NO_ISSUES  # CPU is busy
    outlier = evaluate("StepOutlier", {}, data)
    assert outlier.status == ISSUES and outlier.violations == 12 and outlier.step == 150
    assert evaluate("StepOutlier", {"n_outliers": "12"}, data).status == NO_ISSUES
    init = evaluate("MaxInitializationTime", {}, data)
    assert init.status == ISSUES and init.triggered >= 1
    assert evaluate("MaxInitializationTime", {"threshold": "40"}, data).status == NO_ISSUES
    usage = evaluate("OverallSystemUsage", {}, data)
    assert usage.status == NO_ISSUES and usage.details["nodes"]["algo-1"]["GPU"]["p50"] == 3.0
    waiting = JobData(tmp_path / "empty", job_start=time.time() - 60)
    assert evaluate("MaxInitializationTime", {}, waiting, final=False).status == IN_PROGRESS


# ------------------------------------------------------------------ runner and reports


def rule_configs(*names: str, **params: str) -> list[dict[str, Any]]:
    return [{"RuleConfigurationName": n, "RuleEvaluatorImage": "503895931360.dkr.ecr.us-east-1.amazonaws.com/"
             "sagemaker-debugger-rules:latest", "RuleParameters": {"rule_to_invoke": n.split("-")[0], **params}}
            for n in names]


def test_runner_statuses_and_report_layout(healthy_job: Path) -> None:
    mark_job_end(healthy_job / "profiler-output")
    debug = rule_configs("CreateXgboostReport", "LossNotDecreasing", "Overfit") + [
        {"RuleConfigurationName": "Mine", "RuleParameters": {"rule_to_invoke": "Nope"}},
        {"RuleConfigurationName": "Custom", "RuleParameters": {"source_s3_uri": "s3://b/rule.py"}}]
    profiler = rule_configs("ProfilerReport-1700000000", StepOutlier_n_outliers="100")
    statuses = run_rules(healthy_job, debug, profiler, final=True, job_name="healthy")
    assert [s["RuleConfigurationName"] for s in statuses] == [c["RuleConfigurationName"] for c in debug + profiler]
    for s in statuses:
        assert set(s) <= {"RuleConfigurationName", "RuleEvaluationStatus", "StatusDetails", "LastModifiedTime"}
        assert s["LastModifiedTime"].tzinfo is not None and len(s.get("StatusDetails", "")) <= 1024
    by_name = {s["RuleConfigurationName"]: s for s in statuses}
    assert by_name["LossNotDecreasing"]["RuleEvaluationStatus"] == NO_ISSUES
    assert by_name["Mine"]["RuleEvaluationStatus"] == ERROR and "Nope" in by_name["Mine"]["StatusDetails"]
    assert by_name["Custom"]["RuleEvaluationStatus"] == ERROR
    assert by_name["ProfilerReport-1700000000"]["RuleEvaluationStatus"] in (NO_ISSUES, ISSUES)
    out = healthy_job / "rule-output"
    assert (out / "CreateXgboostReport" / "xgboost_report.html").is_file()
    reports = out / "ProfilerReport-1700000000" / "profiler-output"
    assert (reports / "profiler-report.html").is_file()
    names = {p.stem for p in (reports / "profiler-reports").glob("*.json")}
    assert names == {"BatchSize", "CPUBottleneck", "Dataloader", "GPUMemoryIncrease", "IOBottleneck",
                     "LoadBalancing", "LowGPUUtilization", "MaxInitializationTime", "OverallFrameworkMetrics",
                     "OverallSystemUsage", "StepOutlier"}
    step_outlier = json.loads((reports / "profiler-reports" / "StepOutlier.json").read_text())
    assert "n_outliers:100" in step_outlier["RuleParameters"] and step_outlier["RuleTriggered"] == 0
    assert {"RuleTriggered", "Violations", "Datapoints", "RuleParameters", "Details"} <= set(step_outlier)


def test_runner_in_progress_and_initial_statuses(healthy_job: Path, overfit_job: Path) -> None:
    running = run_rules_by_kind(overfit_job, rule_configs("Overfit", "TreeDepth"), [], final=False)
    assert [s["RuleEvaluationStatus"] for s in running["DebugRuleEvaluationStatuses"]] == [ISSUES, ISSUES]
    running = run_rules_by_kind(healthy_job, rule_configs("Overfit"), [], final=False)
    assert running["DebugRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] == IN_PROGRESS
    initial = initial_statuses(rule_configs("Overfit"), rule_configs("ProfilerReport-1"))
    assert initial["ProfilerRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] == IN_PROGRESS


def assert_self_contained(page: str, sections: list[str]) -> None:
    assert "plotly.js v" in page[:20_000] and "Plotly.newPlot" in page  # the bundle is inline, once
    assert page.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=[\"']?https?:", page, re.I)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", page, re.I)
    for title in sections:
        assert f">{title}</h2>" in page, title


def test_reports_are_self_contained_with_expected_sections(healthy_job: Path) -> None:
    run_rules(healthy_job, rule_configs("CreateXgboostReport", "Overfit"), rule_configs("ProfilerReport"),
              final=True, job_name="healthy")
    out = healthy_job / "rule-output"
    profiler = (out / "ProfilerReport" / "profiler-output" / "profiler-report.html").read_text()
    assert_self_contained(profiler, ["Training job summary", "System usage statistics",
                                     "Resource utilization over time", "Framework metrics summary",
                                     "Rules summary", "Rule analysis"])
    xgb_report = (out / "CreateXgboostReport" / "xgboost_report.html").read_text()
    assert_self_contained(xgb_report, ["Hyperparameters", "Distribution of true labels", "Loss per round",
                                       "Feature importance", "Confusion matrix",
                                       "Evaluation of the confusion matrix", "Accuracy of each class over rounds",
                                       "ROC curve", "Debugger rules"])
    assert "AUC" in xgb_report and "weighted average" in xgb_report


def test_regression_report_has_residual_sections(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 5))
    y = (3 * X[:, 0] + X[:, 1] ** 2 + rng.normal(size=2000)).astype(np.float32)
    job = train_job(tmp_path / "job", X, y, {"objective": "reg:squarederror", "max_depth": 4}, 12,
                    interval="4", profile=False)
    run_rules(job, rule_configs("CreateXgboostReport"), [], final=True)
    page = (job / "rule-output" / "CreateXgboostReport" / "xgboost_report.html").read_text()
    assert_self_contained(page, ["Distribution of residuals", "Absolute validation error per label bin",
                                 "Loss per round"])
    assert ">ROC curve</h2>" not in page and ">Confusion matrix</h2>" not in page
