"""Build ``/opt/ml``-shaped instance directories and run the built-in XGBoost trainer on them.

Shared by the algorithm's tests; the platform's tests may use it to fake an instance.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN_MODULE = "sagestack.algorithms.xgboost.train"
REPO = Path(__file__).resolve().parents[2]


def channel_config(content_type: str | None = "text/csv", **extra: str) -> dict[str, str]:
    config = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    if content_type is not None:
        config["ContentType"] = content_type
    config.update(extra)
    return config


def make_instance(
    root: Path,
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, Mapping[str, str]],
    host: str = "algo-1",
    hosts: Sequence[str] = ("algo-1",),
) -> Path:
    """Write the config files of one instance under ``root`` (the data goes in separately)."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters)))
    (config / "inputdataconfig.json").write_text(json.dumps({k: dict(v) for k, v in channels.items()}))
    resource = {"current_host": host, "hosts": list(hosts), "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    for name in channels:
        (root / "input" / "data" / name).mkdir(parents=True, exist_ok=True)
    return root


def write_csv(path: Path, labels: np.ndarray, features: np.ndarray) -> Path:
    """Header-less CSV, label first (what built-in XGBoost reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([labels, features]), delimiter=",", fmt="%.6g")
    return path


def write_libsvm(path: Path, labels: np.ndarray, features: np.ndarray) -> Path:
    """libsvm text with 0-based indices; zeros are left out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for label, row in zip(labels, features, strict=True):
        pairs = " ".join(f"{j}:{v:.6g}" for j, v in enumerate(row) if v != 0)
        lines.append(f"{label:g} {pairs}".rstrip())
    path.write_text("\n".join(lines) + "\n")
    return path


def binary_problem(rows: int, seed: int = 0, features: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A learnable binary task: the label is whether a linear score is positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] > 0).astype(np.float64)
    return y, x


@dataclass
class Run:
    returncode: int
    stdout: str
    root: Path

    @property
    def failure(self) -> str | None:
        path = self.root / "output" / "failure"
        return path.read_text() if path.exists() else None

    @property
    def model_path(self) -> Path:
        return self.root / "model" / "xgboost-model"

    def round_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("[") and "]#011" in line]


def _env(root: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "SM_OPT_ML": str(root), "PYTHONPATH": str(REPO)}
    env.update(extra or {})
    return env


def start(root: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", TRAIN_MODULE],
        env=_env(root, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def finish(process: subprocess.Popen[str], root: Path, timeout: float = 120) -> Run:
    stdout, _ = process.communicate(timeout=timeout)
    return Run(process.returncode, stdout, root)


def run(root: Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> Run:
    return finish(start(root, env), root, timeout)


def run_in_process(root: Path, env: Mapping[str, str] | None = None) -> Run:
    """Call the trainer's ``main()`` in this process (no interpreter start-up: for quick failure cases).

    The environment, stdout and the logging set-up it changes are restored afterwards.
    """
    from sagestack.algorithms.xgboost import train

    saved_env = dict(os.environ)
    logger = logging.getLogger()
    saved_handlers, saved_level = logger.handlers[:], logger.level
    out = io.StringIO()
    try:
        os.environ.update({"SM_OPT_ML": str(root), **(env or {})})
        with contextlib.redirect_stdout(out):
            code = train.main()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        logger.handlers[:] = saved_handlers
        logger.setLevel(saved_level)
        logging.captureWarnings(False)
    return Run(code, out.getvalue(), root)


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free on the loopback interface right now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free pair of ports")
