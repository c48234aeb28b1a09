"""Trees compiled to C by tl2cgen: same numbers as xgboost, or not used at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from sagestack.serving import compiled
from sagestack.serving.predictors import DMatrixPredictor
from sagestack.serving.xgboost_handler import XGBoostHandler

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="compiling trees needs gcc")
FEATURES = 12


def _data(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    x[:, :4] = rng.integers(0, 3, size=(rows, 4))  # values equal to split thresholds
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def _train(objective: str, **params: object) -> xgb.Booster:
    x = _data(400, 0)
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 5])
    if objective.startswith("multi:"):
        label = np.digitize(signal, [-1.0, 0.5, 2.0]).astype(np.float32)
        params["num_class"] = 4
    elif objective.startswith("binary:"):
        label = (signal > 1).astype(np.float32)
    else:
        label = signal.astype(np.float32)
    return xgb.train({"objective": objective, "max_depth": 4, "nthread": 1, **params}, xgb.DMatrix(x, label), 15)


def _model_dir(root: Path, booster: xgb.Booster) -> Path:
    root.mkdir()
    (root / "xgboost-model").write_bytes(bytes(booster.save_raw("ubj")))
    return root


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "multi:softprob"])
def test_compiled_predictions_equal_xgboost(tmp_path: Path, objective: str) -> None:
    booster = _train(objective)
    predictor = compiled.CompiledPredictor(compiled.compile_booster(booster, tmp_path), DMatrixPredictor(booster))
    x = _data(300, 7)
    x[0, 5] = np.nan  # a missing value (in a feature the trees split on) through the one-row call
    reference = booster.predict(xgb.DMatrix(x))
    for rows in (x[:1], x[:5], x):  # the one-row call and tl2cgen's batch predictor
        np.testing.assert_allclose(predictor.dense(rows), reference[: len(rows)], atol=1e-6, rtol=0)
        assert predictor.dense(rows).shape == reference[: len(rows)].shape
    assert np.isnan(x[:1]).any()  # missing values went through the one-row call


def test_library_is_cached_by_model_content(tmp_path: Path) -> None:
    booster = _train("binary:logistic")
    first = compiled.compile_booster(booster, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert compiled.compile_booster(booster, tmp_path) == first
    assert first.stat().st_mtime_ns == stamp  # not rebuilt
    other = compiled.compile_booster(_train("binary:logistic", eta=0.1), tmp_path)
    assert other != first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])  # no partial files


def test_handler_serves_compiled_trees_and_keeps_its_checks(tmp_path: Path) -> None:
    booster = _train("binary:logistic")
    handler = XGBoostHandler.from_model_dir(_model_dir(tmp_path / "model", booster), env={}, log=lambda _m: None)
    messages: list[str] = []
    assert compiled.compile_model(handler.model, tmp_path / "cache", messages.append)
    assert type(handler.model.predictors[0]).__name__ == "CompiledPredictor"
    assert "compiled trees serving" in messages[0]
    x = _data(20, 3)
    body = "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in x).encode()
    answer = handler.invoke(body, "text/csv", "text/csv")
    scores = np.array([float(v) for v in answer.body.decode().split()])
    np.testing.assert_allclose(scores, booster.predict(xgb.DMatrix(x)), atol=1e-6, rtol=0)
    # Fewer columns than the model: padded with missing values, then predicted like xgboost does.
    narrow = handler.invoke(b"1,2,3", "text/csv", "text/csv")
    padded = np.full((1, FEATURES), np.nan, dtype=np.float32)
    padded[0, :3] = [1, 2, 3]
    assert float(narrow.body) == pytest.approx(float(booster.predict(xgb.DMatrix(padded))[0]), abs=1e-6)
    # Too many columns: still the container's 400.
    wide = handler.invoke(",".join(["1"] * (FEATURES + 1)).encode(), "text/csv", "text/csv")
    assert wide.status == 400 and b"not consistent with feature size" in wide.body


def test_requests_served_while_the_trees_compile_are_answered_right(tmp_path: Path) -> None:
    # The compile thread checks its library against xgboost while the serving thread predicts: they
    # must not share a predictor's reused output arguments (that once gave shapes of 10^14 rows).
    booster = _train("binary:logistic")
    handler = XGBoostHandler.from_model_dir(_model_dir(tmp_path / "model", booster), env={}, log=lambda _m: None)
    x = np.nan_to_num(_data(50, 4))
    bodies = [",".join(repr(float(v)) for v in row).encode() for row in x]
    expected = booster.predict(xgb.DMatrix(x))
    natives = list(handler.model.predictors)
    for attempt in range(2):  # a fresh cache each time: gcc runs, so the overlap lasts about a second
        thread = compiled.compile_in_background(handler.model, tmp_path / f"cache-{attempt}", lambda _m: None)
        served = 0
        while thread.is_alive() or served < 200:
            index = served % len(bodies)
            answer = handler.invoke(bodies[index], "text/csv", "text/csv")
            assert answer.status == 200, answer.body
            assert float(answer.body) == pytest.approx(float(expected[index]), abs=1e-6)
            served += 1
        assert type(handler.model.predictors[0]).__name__ == "CompiledPredictor"
        handler.model.predictors = natives  # xgboost serves again for the next round


def test_a_model_the_compiler_cannot_reproduce_keeps_xgboost(tmp_path: Path) -> None:
    booster = _train("multi:softmax")  # xgboost answers class ids; the compiled code would not
    handler = XGBoostHandler.from_model_dir(_model_dir(tmp_path / "model", booster), env={}, log=lambda _m: None)
    before = handler.model.predictors
    messages: list[str] = []
    assert not compiled.compile_model(handler.model, tmp_path / "cache", messages.append)
    assert handler.model.predictors is before
    assert len(messages) == 1 and "differ from xgboost's on probe rows; keeping xgboost's predictor" in messages[0]


def test_switch_turns_compiling_off() -> None:
    assert not compiled.enabled({"SAGESTACK_COMPILE_MODELS": "0"})
    assert compiled.enabled({}) == (shutil.which("gcc") is not None)
