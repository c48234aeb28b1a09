"""Predictors: a booster's rows-to-scores call, the fast ctypes one and ``Booster.predict(DMatrix)``.

The Python wrappers around libxgboost's in-place prediction
(``Booster.inplace_predict``, ``Booster.predict(DMatrix)``) cost more than the
trees on a one-row request, so the native predictor calls the C entry points
through ctypes; it serves only once it reproduces ``Booster.predict(DMatrix)``
on probe rows. The model server later swaps in trees compiled to C
(:mod:`sagestack.serving.compiled`), checked on the same probe rows.
"""

from __future__ import annotations

import ctypes
import json
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import xgboost as xgb

from sagestack.serving.rows import SparseRows


class Predictor(Protocol):
    def dense(self, rows: np.ndarray) -> np.ndarray: ...
    def sparse(self, rows: SparseRows) -> np.ndarray: ...


def xgb_message(raw: bytes | str) -> str:
    """libxgboost's error text without the native stack trace that follows it."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.split("\nStack trace:", 1)[0].strip()


class NativePredictor:
    """libxgboost's in-place prediction called through ctypes with prebuilt arguments.

    Same C entry points as ``Booster.inplace_predict`` (identical numbers), minus
    about 40 us of Python per call: the wrapper re-imports helpers, re-encodes its
    JSON config and inspects the input type every time. The output arguments are
    reused between calls, so an instance serves one thread.
    """

    def __init__(self, booster: xgb.Booster) -> None:
        from xgboost import core

        self._booster = booster  # keeps the handle alive
        self._handle = booster.handle
        self._lib = core._LIB
        config = {
            "type": 0,  # transformed values, as Booster.predict returns them
            "training": False,
            "iteration_begin": 0,
            "iteration_end": 0,  # every tree: the container passes no range on xgboost >= 2
            "missing": math.nan,
            "strict_shape": False,
            "cache_id": 0,
        }
        self._config = json.dumps(config).encode()  # json writes NaN, which libxgboost reads
        self._shape = ctypes.POINTER(ctypes.c_uint64)()
        self._dims = ctypes.c_uint64()
        self._out = ctypes.POINTER(ctypes.c_float)()
        self._out_refs = (ctypes.byref(self._shape), ctypes.byref(self._dims), ctypes.byref(self._out))

    def dense(self, rows: np.ndarray) -> np.ndarray:
        iface = b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"<f4","version":3}' % (
            rows.ctypes.data,
            rows.shape[0],
            rows.shape[1],
        )
        self._check(
            self._lib.XGBoosterPredictFromDense(self._handle, iface, self._config, None, *self._out_refs)
        )
        return self._result()

    def sparse(self, rows: SparseRows) -> np.ndarray:
        ifaces = [_vector_iface(a) for a in (rows.indptr, rows.indices, rows.values)]
        call = self._lib.XGBoosterPredictFromCSR
        self._check(
            call(self._handle, *ifaces, ctypes.c_uint64(rows.num_col), self._config, None, *self._out_refs)
        )
        return self._result()

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise xgb.core.XGBoostError(xgb_message(self._lib.XGBGetLastError()))

    def _result(self) -> np.ndarray:
        shape = tuple(self._shape[i] for i in range(self._dims.value))
        size = math.prod(shape)
        # Copy out at once: the buffer belongs to the booster and the next call overwrites it.
        buffer = (ctypes.c_float * size).from_address(ctypes.addressof(self._out.contents))
        return np.frombuffer(buffer, dtype=np.float32).reshape(shape).copy()


def _vector_iface(array: np.ndarray) -> bytes:
    return b'{"data":[%d,true],"shape":[%d],"strides":null,"typestr":"%s","version":3}' % (
        array.ctypes.data,
        array.shape[0],
        array.dtype.str.encode(),
    )


class DMatrixPredictor:
    """The container's own call, ``Booster.predict(DMatrix)``: the fallback and the reference."""

    def __init__(self, booster: xgb.Booster) -> None:
        self._booster = booster

    def dense(self, rows: np.ndarray) -> np.ndarray:
        return self._booster.predict(xgb.DMatrix(rows), validate_features=False)

    def sparse(self, rows: SparseRows) -> np.ndarray:
        import scipy.sparse

        matrix = scipy.sparse.csr_matrix(
            (rows.values, rows.indices, rows.indptr), shape=(rows.num_rows, rows.num_col)
        )
        return self._booster.predict(xgb.DMatrix(matrix), validate_features=False)


def choose_predictor(
    booster: xgb.Booster, log: Callable[[str], None] = print
) -> NativePredictor | DMatrixPredictor:
    """The fast path when it reproduces ``Booster.predict(DMatrix)`` on probe rows, else the slow one."""
    try:
        native = NativePredictor(booster)
        reference = DMatrixPredictor(booster)
        ok = all(
            close_predictions(native.dense(probe), reference.dense(probe))
            and close_predictions(native.sparse(_to_sparse(probe)), reference.sparse(_to_sparse(probe)))
            for probe in probe_rows(booster.num_features())
        )
    except Exception as exc:  # a private ctypes surface may move between xgboost releases
        log(f"native prediction unavailable ({type(exc).__name__}: {exc}); using Booster.predict")
        return DMatrixPredictor(booster)
    if not ok:
        log("native prediction differs from Booster.predict on probe rows; using Booster.predict")
        return DMatrixPredictor(booster)
    return native


def probe_rows(num_features: int) -> list[np.ndarray]:
    """Rows on which two predictors must agree: random values with missing ones, small integers
    (the thresholds real data meets exactly), and a single row."""
    rng = np.random.default_rng(20240607)
    width = max(num_features, 1)
    rows = rng.normal(scale=3.0, size=(16, width)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan  # exercise default directions
    rows[0] = 0.0
    integers = rng.integers(0, 3, size=(16, width)).astype(np.float32)
    return [rows, integers, integers[3:4].copy()]


def _to_sparse(rows: np.ndarray) -> SparseRows:
    present = ~np.isnan(rows)
    indptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(present)[1].astype(np.int32)
    return SparseRows(indptr, indices, rows[present].astype(np.float32), rows.shape[1])


def close_predictions(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=1e-6, equal_nan=True))

