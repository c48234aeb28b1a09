"""One built-in XGBoost training instance (run through :mod:`.train`).

The process works in an ``/opt/ml``-shaped directory (``$SM_OPT_ML``, default
``/opt/ml``), reads the job's config files and channels there, prints one line
per boosting round on stdout, writes ``model/xgboost-model`` on success and
``output/failure`` on failure. See the package docstring for the contract.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xgboost as xgb

from sagestack.algorithms.errors import (
    EXIT_FAILURE,
    AlgorithmError,
    BaseToolkitError,
    PeerError,
    PlatformError,
    UserError,
    write_failure,
)
from sagestack.algorithms.xgboost import data as data_mod
from sagestack.algorithms.xgboost import distributed
from sagestack.algorithms.xgboost import hyperparameters as hp
from sagestack.algorithms.xgboost.custom_metrics import make_custom_metric, split_metrics
from sagestack.algorithms.xgboost.dataset import LIBSVM, DataSet
from sagestack.algorithms.xgboost.metrics import MAXIMIZE_METRICS, TAB

log = logging.getLogger("sagestack.xgboost")

ENV_OPT_ML = "SM_OPT_ML"
#: Optional: vCPUs of the instance type; caps the default ``nthread``.
ENV_NUM_CPUS = "SM_NUM_CPUS"
MODEL_NAME = "xgboost-model"
PEER_FAILURE_DELAY = 2.0
CHECKPOINT_NAME = "xgboost-checkpoint"
CHECKPOINTS_KEPT = 5
SAGEMAKER_ROOT = "/opt/ml"

TRAIN, VALIDATION, CODE = "train", "validation", "code"
FILE_MODES = ("File", "FastFile")  # FastFile delivers files too
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")

# Substrings of xgboost errors that the user caused (bad labels, bad parameter values).
USER_ERROR_MARKERS = (
    "label must be in [0,1]",
    "label must be in [0, num_class)",
    "base_score must be in (0,1)",
    "feature_names mismatch",
    "label must be nonnegative",
    "label must be positive",
    "only contains pos or neg samples",
    "reg_lambda should be greater equal to 0",
    "preds.size() == info.labels_.size()",
    "Check failed: labels",
)


# ---------------------------------------------------------------- paths and config


@dataclass(frozen=True)
class Paths:
    """The ``/opt/ml`` layout under ``root``."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    def channel(self, name: str) -> Path:
        return self.data / name

    def visible(self, path: Path) -> str:
        """``path`` as the job sees it in SageMaker (under ``/opt/ml``)."""
        try:
            return f"{SAGEMAKER_ROOT}/{path.relative_to(self.root)}"
        except ValueError:
            return str(path)

    def local(self, sagemaker_path: str) -> Path:
        """Map a path the platform wrote SageMaker-style (``/opt/ml/...``) into ``root``."""
        if sagemaker_path == SAGEMAKER_ROOT or sagemaker_path.startswith(SAGEMAKER_ROOT + "/"):
            return self.root / sagemaker_path[len(SAGEMAKER_ROOT) :].lstrip("/")
        return Path(sagemaker_path)


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        if default is not None:
            return default
        raise PlatformError(f"Missing configuration file {path.name}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PlatformError(f"Configuration file {path.name} is not valid JSON", caused_by=exc) from exc


def validate_channels(channels: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Check channel names and their (content type, input mode, distribution) combination."""
    if TRAIN not in channels:
        raise UserError(f"Missing required channel: {TRAIN}")
    validated: dict[str, dict[str, Any]] = {}
    for name, raw in channels.items():
        if name not in (TRAIN, VALIDATION, CODE):
            raise UserError(f"Extraneous channel found: {name}")
        channel = dict(raw)
        channel.setdefault("ContentType", data_mod.DEFAULT_CONTENT_TYPE)
        if not _channel_supported(name, channel):
            raise UserError(f"Channel configuration for '{name}' channel is not supported: {channel}")
        validated[name] = channel
    return validated


def _channel_supported(name: str, channel: Mapping[str, Any]) -> bool:
    mode = channel.get("TrainingInputMode", "File")
    distribution = channel.get("S3DistributionType", "FullyReplicated")
    if name == CODE:
        return channel["ContentType"] == "text/python" and mode in FILE_MODES and distribution == DISTRIBUTIONS[0]
    fmt = data_mod.parse_content_type(channel["ContentType"])
    # Pipe channels are delivered as files by this platform; libsvm never had Pipe support.
    mode_ok = mode in FILE_MODES or (mode == "Pipe" and fmt != LIBSVM)
    return mode_ok and distribution in DISTRIBUTIONS


@dataclass
class Job:
    """Everything the instance was told: validated hyperparameters, channels and hosts."""

    paths: Paths
    config: dict[str, Any]
    channels: dict[str, dict[str, Any]]
    hosts: list[str]
    current_host: str
    checkpoint_dir: Path | None = None
    fmt: str = LIBSVM

    @classmethod
    def load(cls, paths: Paths) -> Job:
        hosts, current = read_hosts(paths)
        config = hp.validate(_read_json(paths.config / "hyperparameters.json", default={}))
        hp.check_supported(config)
        channels = validate_channels(_read_json(paths.config / "inputdataconfig.json"))
        # SageMaker reads the validation channel with the train channel's content type.
        fmt = data_mod.parse_content_type(channels[TRAIN]["ContentType"])
        checkpoint = _read_json(paths.config / "checkpointconfig.json", default={}).get("LocalPath")
        checkpoint_dir = paths.local(checkpoint) if checkpoint else None
        return cls(paths, config, channels, hosts, current, checkpoint_dir, fmt)


def read_hosts(paths: Paths) -> tuple[list[str], str]:
    """``(hosts, current_host)`` from resourceconfig.json; a lone ``algo-1`` when it is absent."""
    resource = _read_json(paths.config / "resourceconfig.json", default={"hosts": ["algo-1"]})
    hosts = list(resource.get("hosts") or ["algo-1"])
    return hosts, resource.get("current_host", hosts[0])


# ---------------------------------------------------------------- data


@dataclass
class Inputs:
    """The data this host trains on; cleared once copied into xgboost's matrices."""

    train: DataSet | None
    validation: DataSet | None
    validation_configured: bool

    def report(self) -> distributed.HostReport:
        if self.train is None or (self.validation_configured and self.validation is None):
            return distributed.HostReport(distributed.NO_DATA)
        n = max(self.train.n_features, self.validation.n_features if self.validation else 0)
        return distributed.HostReport(distributed.HAS_DATA, n, self.train.is_sparse)

    def widen(self, n_features: int) -> None:
        for ds in (self.train, self.validation):
            if ds is not None:
                ds.with_n_features(n_features)


def load_inputs(job: Job) -> Inputs:
    csv_weights = bool(job.config.get("csv_weights", 0))
    objective, num_class = job.config.get("objective"), job.config.get("num_class")
    train_dir = job.paths.channel(TRAIN)
    train = data_mod.read_channel(train_dir, job.fmt, csv_weights)
    validation = None
    if VALIDATION in job.channels:
        val_dir = job.paths.channel(VALIDATION)
        _warn_identical_files(train_dir, val_dir)
        validation = data_mod.read_channel(val_dir, job.fmt, csv_weights)
    for ds in (train, validation):
        if ds is not None:
            data_mod.validate_labels(ds, objective, num_class)
    inputs = Inputs(train, validation, VALIDATION in job.channels)
    if train is not None and validation is not None:
        if train.is_sparse:  # libsvm files simply stop at their highest index
            inputs.widen(max(train.n_features, validation.n_features))
        elif train.n_features != validation.n_features:
            # xgboost would quietly treat the missing columns as missing values
            raise UserError(
                f"The validation data has {validation.n_features} features but the training data has "
                f"{train.n_features}; both channels need the same columns."
            )
    return inputs


def _warn_identical_files(train_dir: Path, val_dir: Path) -> None:
    """SageMaker warns when train and validation share a file name and size (probably a mistake)."""
    try:
        train_files = {p.relative_to(train_dir): p.stat().st_size for p in data_mod.list_data_files(train_dir)}
        val_files = {p.relative_to(val_dir): p.stat().st_size for p in data_mod.list_data_files(val_dir)}
    except (OSError, ValueError, UserError):
        return
    for rel, size in val_files.items():
        if train_files.get(rel) == size:
            log.warning(
                "Suspected identical files found (train/%s and validation/%s with same size %d bytes). "
                "Duplicate data in the training and validation sets makes the validation score meaningless.",
                rel,
                rel,
                size,
            )


def _require_data(job: Job, inputs: Inputs) -> None:
    if inputs.train is None:
        raise UserError(f"No data in training channel path {job.paths.visible(job.paths.channel(TRAIN))}")
    if inputs.validation_configured and inputs.validation is None:
        raise UserError(f"No data in validation channel path {job.paths.visible(job.paths.channel(VALIDATION))}")


# ---------------------------------------------------------------- training


def default_nthread(environ: Mapping[str, str] = os.environ) -> int:
    """CPUs this process may use (its affinity mask), capped by ``SM_NUM_CPUS`` when set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    declared = environ.get(ENV_NUM_CPUS, "")
    if declared.isdigit() and int(declared) > 0:
        cpus = min(cpus, int(declared))
    return max(cpus, 1)


@dataclass(frozen=True)
class MetricPlan:
    """Which metrics to print and which one (if any) stops training early."""

    native: list[str]
    custom: list[str]
    early_stopping_metric: str | None
    maximize: bool


def plan_metrics(config: Mapping[str, Any], has_validation: bool) -> MetricPlan:
    """SageMaker's rules: the tuning objective joins ``eval_metric`` (sorted union), and
    early stopping uses the objective, else the last ``eval_metric``, and only with validation data."""
    eval_metric: list[str] | None = config.get("eval_metric")
    objective = config.get("_tuning_objective_metric")
    tuning = objective.split(":", 1)[1].split(",") if objective else None
    # Sorted so that every host of a distributed job evaluates metrics in the same order.
    both = tuning and eval_metric
    names = sorted(set(tuning) | set(eval_metric)) if both else list(tuning or eval_metric or [])
    native, custom = split_metrics(names)
    stop = None
    if config.get("early_stopping_rounds") and has_validation:
        stop = tuning[-1] if tuning else (eval_metric[-1] if eval_metric else None)
    # ndcg@5 and map@5 are maximised like ndcg and map.
    maximize = bool(stop) and stop.split("@", 1)[0] in MAXIMIZE_METRICS
    return MetricPlan(native, custom, stop, maximize)


class RoundLogger(xgb.callback.TrainingCallback):
    """Prints ``[i]#011train-m:v#011validation-m:v`` after each round, as CloudWatch shows it."""

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        if self.enabled and evals_log:
            fields = [
                f"{TAB}{data}-{metric}:{_last(values):.5f}"
                for data, per_metric in evals_log.items()
                for metric, values in per_metric.items()
            ]
            print(f"[{epoch}]" + "".join(fields), flush=True)
        return False


def _last(values: list) -> float:
    value = values[-1]
    return float(value[0] if isinstance(value, tuple) else value)


class SaveEachRound(xgb.callback.TrainingCallback):
    """``save_model_on_termination``: keep the latest model in ``model/`` after every round."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__()
        self.model_dir = model_dir

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        save_model(model, self.model_dir)
        return False


class Checkpoints(xgb.callback.TrainingCallback):
    """Spot-training checkpoints ``xgboost-checkpoint.<round>``; the newest few are kept."""

    pattern = re.compile(rf"^{CHECKPOINT_NAME}\.(\d+)$")

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def existing(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := self.pattern.match(p.name))]
        return sorted(found)

    def latest(self) -> tuple[xgb.Booster | None, int]:
        """The newest readable checkpoint and the number of rounds it holds."""
        for number, path in reversed(self.existing()):
            try:
                booster = xgb.Booster(model_file=str(path))
            except xgb.core.XGBoostError:
                log.warning("Ignoring unreadable checkpoint %s", path.name)
                continue
            log.info("Resuming from checkpoint %s", path.name)
            return booster, number + 1
        return None, 0

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.directory / f"{CHECKPOINT_NAME}.{epoch}", bytes(model.save_raw("ubj")))
        for _, old in self.existing()[:-CHECKPOINTS_KEPT]:
            old.unlink(missing_ok=True)
        return False


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def save_model(booster: xgb.Booster, model_dir: Path) -> Path:
    """Write ``xgboost-model``: xgboost's default format for an extension-less name (UBJSON)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MODEL_NAME
    _atomic_write(path, bytes(booster.save_raw("ubj")))
    return path


def _uses_quantile_matrix(params: Mapping[str, Any]) -> bool:
    """Hist-based tree training can use QuantileDMatrix: about 1 byte per value instead of 8."""
    return (
        params.get("booster", "gbtree") != "gblinear"
        and params.get("tree_method", "hist") in ("hist", "auto")
        and "updater" not in params
        and params.get("process_type", "default") == "default"
    )


def build_matrices(params: Mapping[str, Any], inputs: Inputs) -> tuple[xgb.DMatrix, xgb.DMatrix | None]:
    """xgboost matrices for train/validation; the inputs are released as soon as copied."""
    quantile = _uses_quantile_matrix(params)
    nthread = int(params.get("nthread", default_nthread()))

    def matrix(ds: DataSet, ref: xgb.DMatrix | None) -> xgb.DMatrix:
        common = {"label": ds.labels, "weight": ds.weights, "qid": ds.qid, "nthread": nthread}
        if quantile:
            return xgb.QuantileDMatrix(ds.features, ref=ref, max_bin=params.get("max_bin"), **common)
        return xgb.DMatrix(ds.features, **common)

    try:
        assert inputs.train is not None
        dtrain = matrix(inputs.train, None)
        inputs.train = None
        dval = matrix(inputs.validation, dtrain) if inputs.validation is not None else None
        inputs.validation = None
    except xgb.core.XGBoostError as exc:
        raise _xgboost_error(exc) from exc
    log.info("Train matrix has %d rows and %d columns", dtrain.num_row(), dtrain.num_col())
    if dval is not None:
        log.info("Validation matrix has %d rows", dval.num_row())
    return dtrain, dval


def _xgboost_error(exc: Exception) -> Exception:
    text = str(exc).split("\nStack trace:")[0].strip()
    if any(marker in text for marker in USER_ERROR_MARKERS):
        return UserError(text)
    if distributed.is_distributed_now() and distributed.is_collective_error(text):
        return PeerError(f"Lost the other hosts during training (one probably failed):\n {text}")
    return AlgorithmError(f"XGB train call failed with exception:\n {text}")


def train_booster(job: Job, inputs: Inputs, is_master: bool) -> xgb.Booster:
    """Run ``xgboost.train`` with SageMaker's metrics, logging, early stopping and checkpoints."""
    config = job.config
    params = hp.xgb_params(config)
    params.setdefault("nthread", default_nthread())
    plan = plan_metrics(config, inputs.validation is not None)
    if plan.native:
        params["eval_metric"] = plan.native
    started = time.time()
    dtrain, dval = build_matrices(params, inputs)
    evals = [(dtrain, TRAIN)] + ([(dval, VALIDATION)] if dval is not None else [])
    # Debugger hooks go first so that other callbacks' time stays out of their measurements.
    callbacks: list[xgb.callback.TrainingCallback] = _debugger_callbacks(job, dtrain, dval, is_master, started)
    callbacks.append(RoundLogger(is_master))
    if plan.early_stopping_metric:
        log.info(
            "Early stopping on validation-%s after %s rounds without improvement",
            plan.early_stopping_metric,
            config["early_stopping_rounds"],
        )
        callbacks.append(
            xgb.callback.EarlyStopping(
                rounds=config["early_stopping_rounds"],
                metric_name=plan.early_stopping_metric,
                data_name=VALIDATION,
                maximize=plan.maximize,
                save_best=True,
            )
        )
    resume, done = None, 0
    if job.checkpoint_dir is not None:
        checkpoints = Checkpoints(job.checkpoint_dir)
        resume, done = checkpoints.latest()
        if is_master:
            callbacks.append(checkpoints)
    if config.get("save_model_on_termination") == "true" and is_master:
        callbacks.append(SaveEachRound(job.paths.model))
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # the last round's model is on disk
    custom = make_custom_metric(plan.custom, config.get("objective"), config.get("num_class"))
    try:
        return xgb.train(
            params,
            dtrain,
            num_boost_round=max(config["num_round"] - done, 0),
            evals=evals,
            custom_metric=custom,
            callbacks=callbacks,
            xgb_model=resume,
            verbose_eval=False,
        )
    except BaseToolkitError:
        raise
    except Exception as exc:
        raise _xgboost_error(exc) from exc


def _debugger_callbacks(job: Job, dtrain: Any, dval: Any, is_master: bool, started: float) -> list[Any]:
    """SageMaker Debugger/profiler hooks, when the platform asked for them.

    The platform sets ``SAGESTACK_DEBUG_ROOT`` (the job directory shared by all
    hosts) only for jobs with a DebugHookConfig or an enabled ProfilerConfig.
    Debug collections come from the master only, so one host writes them.
    """
    root = os.environ.get("SAGESTACK_DEBUG_ROOT")
    if not root:
        return []
    from sagestack.debugger.hook import make_callbacks, record_phase

    out_root = Path(root)
    record_phase(out_root, "Initialization", started, time.time(), host=job.current_host)
    debug_file, profiler_file = job.paths.config / "debughookconfig.json", job.paths.config / "profilerconfig.json"
    debug = _read_json(debug_file) if is_master and debug_file.exists() else None
    profiler = _read_json(profiler_file) if profiler_file.exists() else None
    raw = _read_json(job.paths.config / "hyperparameters.json", default={})
    return list(make_callbacks(out_root, debug, profiler, dtrain, dval, raw, host=job.current_host))


# ---------------------------------------------------------------- single host and cluster


def train_single(job: Job, inputs: Inputs) -> None:
    _require_data(job, inputs)
    log.info("Single node training.")
    booster = train_booster(job, inputs, is_master=True)
    log.info("Stored trained model at %s", job.paths.visible(save_model(booster, job.paths.model)))


def train_distributed(
    job: Job | None,
    cluster: distributed.Cluster,
    tracker: distributed.Tracker | None,
    inputs: Inputs | None,
    failure: BaseException | None,
) -> None:
    """Both rounds of distributed training (see :mod:`.distributed`)."""
    log.info("Distributed node training with %d hosts: %s", len(cluster.hosts), list(cluster.hosts))
    failed_here = failure is not None or job is None or inputs is None
    mine = distributed.HostReport(distributed.FAILED) if failed_here else inputs.report()
    with distributed.first_round(cluster, tracker):
        reports = distributed.exchange_reports(cluster, mine)
        members = [h for h in cluster.hosts if reports[h].status == distributed.HAS_DATA]
        if failure is None and len(members) == len(cluster.hosts):
            assert job is not None and inputs is not None
            _train_member(job, inputs, _agreed_features(reports, members), distributed.rank() == 0)
            return
    # Decisions every host makes alike from the same reports, outside the group.
    if failure is not None:
        raise failure
    assert job is not None and inputs is not None
    failed = [h for h, r in reports.items() if r.status == distributed.FAILED]
    if failed:
        raise PeerError(f"Host(s) {', '.join(failed)} failed before training; stopping.")
    if not members:
        _require_data(job, inputs)  # raises: no host has data, this one included
    n_features = _agreed_features(reports, members)
    if cluster.current not in members:
        log.warning("Host %s does not have data. It will not be used in distributed training.", cluster.current)
        if cluster.runs_trackers and len(members) > 1:
            distributed.serve_second_round(cluster, members)
        return
    if len(members) == 1:
        log.info("Only host %s has data: single node training.", cluster.current)
        _train_member(job, inputs, n_features, is_master=True)
        return
    with distributed.second_round(cluster, members):
        _train_member(job, inputs, n_features, distributed.rank() == 0)


def _train_member(job: Job, inputs: Inputs, n_features: int, is_master: bool) -> None:
    inputs.widen(n_features)
    booster = train_booster(job, inputs, is_master)
    if is_master:
        log.info("Stored trained model at %s", job.paths.visible(save_model(booster, job.paths.model)))


def _agreed_features(reports: Mapping[str, distributed.HostReport], members: list[str]) -> int:
    counts = {h: reports[h].n_features for h in members}
    if members and not reports[members[0]].sparse and len(set(counts.values())) > 1:
        raise UserError(f"Hosts have training data with different numbers of features: {counts}")
    return max(counts.values(), default=0)


def run(paths: Paths, environ: Mapping[str, str]) -> None:
    """Train as this instance of the job described under ``paths``."""
    hosts, current = read_hosts(paths)
    if len(hosts) == 1:
        job = Job.load(paths)
        train_single(job, load_inputs(job))
        return
    cluster = distributed.Cluster.from_env(hosts, current, environ)
    # The first host's tracker must be up before peers finish loading, whatever happens next.
    tracker = distributed.start_first_tracker(cluster)
    job, inputs, failure = None, None, None
    try:
        job = Job.load(paths)
        inputs = load_inputs(job)
    except BaseToolkitError as exc:
        failure = exc  # told to the peers first, so that they stop instead of waiting for this host
    train_distributed(job, cluster, tracker, inputs, failure)


# ---------------------------------------------------------------- process


def _setup_logging() -> None:
    # One stream (stdout) keeps log lines and round lines in order in the job's log.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s:%(levelname)s] %(message)s", "%Y-%m-%d:%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def main() -> int:
    """Run one training instance; returns the process exit code (0, or 1 after writing the failure)."""
    _setup_logging()
    paths = Paths(Path(os.environ.get(ENV_OPT_ML, SAGEMAKER_ROOT)))
    log.info("Running XGBoost in algorithm mode (xgboost %s)", xgb.__version__)
    try:
        run(paths, os.environ)
    except PeerError as exc:
        log.error("%s", exc.message)
        # The platform reports the first instance that exits non-zero: let the one that failed go first.
        time.sleep(PEER_FAILURE_DELAY)
        write_failure(paths.root, exc)
        return EXIT_FAILURE
    except BaseToolkitError as exc:
        log.error("%s", exc.message)
        write_failure(paths.root, exc)
        return EXIT_FAILURE
    except Exception as exc:
        log.exception("Training failed")
        write_failure(paths.root, exc)
        return EXIT_FAILURE
    return 0
