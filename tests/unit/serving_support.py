"""Models and helpers shared by the model-server tests (in-process handling and the process over HTTP).

Reference numbers always come from ``Booster.predict(xgb.DMatrix(X))`` on the
same booster, which is what SageMaker's container computes.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse
import xgboost as xgb

from sagestack.serving.model import load_booster
from sagestack.serving.xgboost_handler import XGBoostHandler

ROOT = Path(__file__).resolve().parents[2]
FEATURES = 8


def training_data(rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # trees learn default directions for missing values
    return x, np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1])


def train_booster(objective: str, rounds: int = 12, **params: object) -> xgb.Booster:
    x, signal_ = training_data()
    if objective.startswith("multi:"):
        label = np.digitize(signal_, [-1.0, 0.0, 1.0]).astype(np.float32)
        params.setdefault("num_class", 4)
    elif objective.startswith(("binary:", "reg:logistic")):
        label = (signal_ > 0).astype(np.float32)
    else:
        label = np.abs(signal_ + 3.0).astype(np.float32)  # count:poisson needs labels >= 0
    params = {"objective": objective, "max_depth": 3, "eta": 0.3, "nthread": 1, **params}
    return xgb.train(params, xgb.DMatrix(x, label), num_boost_round=rounds)


def write_model_dir(root: Path, name: str, booster: xgb.Booster, fmt: str = "ubj") -> Path:
    directory = root / name
    directory.mkdir()
    target = directory / "xgboost-model"
    if fmt == "pickle":
        target.write_bytes(pickle.dumps(booster, protocol=4))
    else:
        target.write_bytes(bytes(booster.save_raw(fmt)))
    return directory


def train_models(root: Path) -> dict[str, Path]:
    """One model directory per objective and format the tests need."""
    return {
        "binary": write_model_dir(root, "binary", train_booster("binary:logistic")),
        "softprob": write_model_dir(root, "softprob", train_booster("multi:softprob")),
        "softmax": write_model_dir(root, "softmax", train_booster("multi:softmax")),
        "logitraw": write_model_dir(root, "logitraw", train_booster("binary:logitraw")),
        "regression": write_model_dir(root, "regression", train_booster("reg:squarederror")),
        "poisson": write_model_dir(root, "poisson", train_booster("count:poisson")),
        "binary_json": write_model_dir(root, "binary_json", train_booster("binary:logistic"), fmt="json"),
        "binary_pickle": write_model_dir(root, "binary_pickle", train_booster("binary:logistic"), fmt="pickle"),
    }


def make_handler(model_dir: Path, **env: str) -> XGBoostHandler:
    return XGBoostHandler.from_model_dir(model_dir, env=env, log=lambda _m: None)


def booster_of(model_dir: Path) -> xgb.Booster:
    return load_booster(model_dir / "xgboost-model")[0]  # pickles too


def reference_scores(model_dir: Path, x: np.ndarray | scipy.sparse.csr_matrix) -> np.ndarray:
    return booster_of(model_dir).predict(xgb.DMatrix(x))


def csv_of(x: np.ndarray) -> bytes:
    return "\n".join(",".join("" if math.isnan(v) else repr(float(v)) for v in row) for row in x).encode()


def float_rows(body: bytes) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines()])
