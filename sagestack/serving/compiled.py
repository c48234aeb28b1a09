"""Trees compiled to C (tl2cgen): the model server's fastest predictor, built after it starts.

libxgboost's in-place prediction spends most of a one-row call on per-call set-up
(config parsing, array-interface decoding, thread dispatch), not on the trees:
~200 us per row on the development machines against ~5 us for the same trees
compiled to a chain of ``if``\\ s. So a model server starts answering with the
native predictor at once and, in a background thread, has tl2cgen generate C for
its boosters, gcc build it into a shared library (about a second per 100 trees),
checks that the library reproduces the native predictions on probe rows, and then
swaps it in. Libraries are cached by model content, so a second instance, a
replacement or a redeploy of the same model loads one in milliseconds.

One row (the common request) is predicted by calling the generated ``predict``
function straight through ctypes; more rows go through tl2cgen's own predictor.
Anything the compiled code cannot do exactly — sparse input, a width other than
the model's, an objective whose output it shapes differently — stays with the
native predictor.

``SAGESTACK_COMPILE_MODELS=0`` turns this off; ``SAGESTACK_COMPILED_MODELS_DIR``
names the cache (the platform points every model server at one shared directory).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sagestack.serving.predictors import Predictor, close_predictions, probe_rows

if TYPE_CHECKING:
    import xgboost as xgb

    from sagestack.serving.model import LoadedModel
    from sagestack.serving.rows import SparseRows

_MISSING = np.int32(-1)  # the generated code's "missing" marker in its union Entry


class CompiledPredictor:
    """Prediction through a tl2cgen-built library; sparse or odd-width input goes to ``fallback``."""

    def __init__(self, libpath: Path, fallback: Predictor) -> None:
        import tl2cgen

        self._fallback = fallback
        # One thread: a second one made 6,500 rows slower here (7 ms -> 12 ms), its hand-off costs more.
        self._batch = tl2cgen.Predictor(str(libpath), nthread=1)
        if self._batch.leaf_output_type != "float32" or self._batch.threshold_type != "float32":
            raise ValueError("compiled model does not use float32 thresholds and leaves")
        self._lib = ctypes.CDLL(str(libpath))  # the same mapping tl2cgen opened, reference-counted
        self._lib.get_num_target.restype = ctypes.c_int32
        self._lib.get_num_feature.restype = ctypes.c_int32
        targets = self._lib.get_num_target()
        classes = (ctypes.c_int32 * max(targets, 1))()
        self._lib.get_num_class(classes)
        if targets != 1:
            raise ValueError(f"compiled model has {targets} targets; only single-target models are served")
        self.outputs = int(classes[0])
        self.num_features = int(self._lib.get_num_feature())
        self._predict_row = self._lib.predict
        self._predict_row.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
        self._predict_row.restype = None
        # One-row requests reuse these buffers (a model server handles one request at a time), so the
        # common case allocates nothing but its result.
        self._entry = np.empty(self.num_features, dtype=np.float32)
        self._entry_bits = self._entry.view(np.int32)
        self._row_out = np.zeros(self.outputs, dtype=np.float32)
        self._entry_address, self._row_out_address = self._entry.ctypes.data, self._row_out.ctypes.data

    def dense(self, rows: np.ndarray) -> np.ndarray:
        if rows.ndim != 2 or rows.shape[1] != self.num_features:
            return self._fallback.dense(rows)  # the generated code reads exactly num_features values
        count = rows.shape[0]
        if count == 1:
            return self._one_row(rows[0])
        import tl2cgen

        out = self._batch.predict(tl2cgen.DMatrix(rows, missing=np.nan))
        return out.reshape(count) if self.outputs == 1 else out.reshape(count, self.outputs)

    def _one_row(self, row: np.ndarray) -> np.ndarray:
        entry = self._entry
        entry[:] = row
        missing = np.isnan(entry)
        if missing.any():
            self._entry_bits[missing] = _MISSING
        out = self._row_out
        out.fill(0.0)  # the generated code adds into it
        self._predict_row(self._entry_address, 0, self._row_out_address)
        return out.reshape(1).copy() if self.outputs == 1 else out.reshape(1, self.outputs).copy()

    def sparse(self, rows: SparseRows) -> np.ndarray:
        return self._fallback.sparse(rows)


def enabled(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return env.get("SAGESTACK_COMPILE_MODELS", "1") not in ("0", "false", "no") and shutil.which("gcc") is not None


def compile_booster(booster: xgb.Booster, cache_dir: Path) -> Path:
    """The shared library of ``booster``'s trees, built once per model content and cached."""
    import tl2cgen
    import treelite

    raw = bytes(booster.save_raw("ubj"))
    key = hashlib.sha256(raw + f"tl2cgen-{tl2cgen.__version__}".encode()).hexdigest()[:32]
    libpath = cache_dir / f"{key}.so"
    if libpath.exists():
        return libpath
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = treelite.frontend.from_xgboost(booster)
    # Built under a private name and renamed: a concurrent instance never loads a half-written file.
    partial = cache_dir / f".{key}.{os.getpid()}.{threading.get_ident()}.so"
    try:
        tl2cgen.export_lib(model, toolchain="gcc", libpath=str(partial), nthread=1, verbose=False)
        os.replace(partial, libpath)
    finally:
        partial.unlink(missing_ok=True)
    return libpath


def compile_model(model: LoadedModel, cache_dir: Path, log: Callable[[str], None]) -> bool:
    """Swap compiled predictors into ``model`` where each reproduces the native one; True if all did."""
    started = time.monotonic()
    upgraded = list(model.predictors)
    for index, (booster, native) in enumerate(zip(model.boosters, model.predictors, strict=True)):
        try:
            compiled = CompiledPredictor(compile_booster(booster, cache_dir), native)
            probes = probe_rows(model.num_features)
            # The serving thread keeps predicting with ``native`` meanwhile, and a predictor reuses its
            # output arguments between calls: this thread checks against one of its own.
            reference = type(native)(booster)
            if not all(close_predictions(compiled.dense(p), reference.dense(p)) for p in probes):
                log(f"compiled trees of {model.paths[index].name} differ from xgboost's on probe rows; "
                    "keeping xgboost's predictor")
                return False
        except Exception as exc:  # gcc missing or failing, an unsupported model: the native path serves
            log(f"compiled trees unavailable for {model.paths[index].name} ({type(exc).__name__}: {exc})")
            return False
        upgraded[index] = compiled
    model.predictors = upgraded  # one assignment: a request sees the old list or the new one
    log(f"compiled trees serving after {time.monotonic() - started:.2f} s: {model.describe()}")
    return True


def compile_in_background(model: LoadedModel, cache_dir: Path, log: Callable[[str], None]) -> threading.Thread:
    thread = threading.Thread(target=compile_model, args=(model, cache_dir, log), name="compile-trees",
                              daemon=True)
    thread.start()
    return thread
