"""Request handling of SageMaker's built-in XGBoost algorithm, as pure functions of bytes.

``XGBoostHandler.invoke(body, content_type, accept)`` returns the status, body
and content type the built-in container (image 3.0-5) would answer with:

* an empty body is 204;
* a payload that cannot be decoded, or a Content-Type the algorithm does not
  read, is 415 with the container's ``Loading csv data failed ...`` messages;
* a prediction failure (too many features ...) is 400
  ``Unable to evaluate payload provided: ...``;
* an Accept it cannot produce is 406, checked *after* predicting, as there;
* ``SAGEMAKER_INFERENCE_OUTPUT`` selects per-row keys (predicted_label,
  probabilities ...), ``SAGEMAKER_BATCH`` forces one line per row.

Deliberate differences, all additions: JSON and JSON Lines requests are read
(the container answers them 415), JSON Lines and RecordIO responses work
without ``SAGEMAKER_INFERENCE_OUTPUT`` (the container fails them with 500),
CSV with one column is accepted (its delimiter sniffer rejects it), and a row
with fewer features than the model is padded with missing values for every
model format (what ``xgb.DMatrix`` prediction does for non-pickled models).

Speed matters here: a one-row CSV request is the common case. The hot path is
a dict lookup for the headers, one msgspec JSON decode of the row and one call into
libxgboost's in-place prediction through ctypes: the Python wrappers around it
(``Booster.inplace_predict``, ``Booster.predict(DMatrix)``) cost more than
the trees. The model server then swaps in trees compiled to C
(:mod:`sagestack.serving.compiled`), which predict a row ~40x faster still.
Large CSV bodies are parsed by pyarrow's reader, several times faster than
``np.loadtxt`` on thousands of rows.
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import math
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import numpy as np
import xgboost as xgb

if TYPE_CHECKING:
    from sagestack.serving.compiled import Predictor

MODEL_FILE = "xgboost-model"
DEFAULT_MAX_CONTENT_LENGTH = 6 * 1024 * 1024

CSV, LIBSVM, RECORDIO, JSON, JSONLINES = "csv", "libsvm", "recordio-protobuf", "json", "jsonlines"

_CONTENT_TYPES = {
    "csv": CSV,
    "text/csv": CSV,
    "libsvm": LIBSVM,
    "text/libsvm": LIBSVM,
    "text/x-libsvm": LIBSVM,
    "recordio-protobuf": RECORDIO,
    "application/x-recordio-protobuf": RECORDIO,
    "application/json": JSON,
    "application/jsonlines": JSONLINES,
}
_PARQUET = {"parquet", "application/x-parquet"}
_ACCEPTED_LIST = (
    "csv, libsvm, parquet, recordio-protobuf, text/csv, text/libsvm, text/x-libsvm, "
    "application/x-parquet, application/x-recordio-protobuf, application/json, application/jsonlines"
)

TEXT_CSV, APP_JSON, APP_JSONLINES, APP_RECORDIO = (
    "text/csv",
    "application/json",
    "application/jsonlines",
    "application/x-recordio-protobuf",
)
SUPPORTED_ACCEPTS = [APP_JSON, APP_JSONLINES, APP_RECORDIO, TEXT_CSV]
# The container's Flask responses carry a charset for text types only.
_RESPONSE_TYPES = {TEXT_CSV: "text/csv; charset=utf-8"}
ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str | None = None


class RequestError(Exception):
    """A failure that becomes a non-2xx response with ``str(self)`` as the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ServingSettings:
    """The container's serving environment variables that change responses."""

    default_accept: str = TEXT_CSV
    batch: bool = False
    #: Keys of ``SAGEMAKER_INFERENCE_OUTPUT`` in request order, or None when unset.
    output_keys: tuple[str, ...] | None = None
    ensemble: bool = True
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServingSettings:
        keys = env.get("SAGEMAKER_INFERENCE_OUTPUT")
        return cls(
            default_accept=(env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or TEXT_CSV)
            .partition(";")[0]
            .strip()
            .lower(),
            # The container tests the variable for truth as a string: any non-empty value.
            batch=bool(env.get("SAGEMAKER_BATCH")),
            output_keys=None if keys is None else tuple(keys.replace(" ", "").lower().split(",")),
            ensemble=env.get("SAGEMAKER_INFERENCE_ENSEMBLE", "true") == "true",
            max_content_length=int(env.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_CONTENT_LENGTH),
        )


# --------------------------------------------------------------------------- decoded requests


@dataclass
class SparseRows:
    """CSR rows: absent entries are missing values, not zeros (as in ``xgb.DMatrix``)."""

    indptr: np.ndarray  # int64, rows + 1
    indices: np.ndarray  # int32
    values: np.ndarray  # float32
    num_col: int

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1


Rows = np.ndarray | SparseRows


def parse_content_type(header: str | None) -> str:
    """The internal format name of a Content-Type header; RequestError(415) when unreadable."""
    if not header or not header.strip():
        return LIBSVM  # the algorithm's default, for requests as for training channels
    media, _, params = header.lower().partition(";")
    media = media.strip()
    kind = _CONTENT_TYPES.get(media)
    if kind == CSV and "label_size" in params and _param(params, "label_size") != "1":
        raise RequestError(
            415,
            f"{header} is not an accepted csv ContentType. Optional parameter label_size must be equal to 1",
        )
    if kind is not None:
        return kind
    if media in _PARQUET:
        raise RequestError(415, f"Content-type {header} is not supported.")
    raise RequestError(415, f"{header} is not an accepted ContentType: {_ACCEPTED_LIST}.")


def _param(params: str, name: str) -> str | None:
    for item in params.split(";"):
        key, _, value = item.partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


def _load_failure(kind: str, exc: BaseException) -> RequestError:
    # The container's wording, including the odd newline-and-space layout.
    return RequestError(
        415,
        f"Loading {kind} data failed with Exception, please ensure data is in {kind} format:\n"
        f" {type(exc)}\n {exc}",
    )


def _sniff_delimiter(first_line: str) -> str:
    """The field separator of a CSV payload; cheaper than ``csv.Sniffer`` and it takes one column."""
    for candidate in (",", "\t", ";", "|"):
        if candidate in first_line:
            return candidate
    return " " if " " in first_line.strip() else ","


def decode_csv(body: bytes) -> np.ndarray:
    """Rows of float32 features; empty fields are missing values (NaN)."""
    try:
        stripped = body.strip()
        text = stripped.decode("utf-8")
        if not text:
            raise ValueError("the payload holds only whitespace")
        first_line = text.partition("\n")[0]
        delimiter = _sniff_delimiter(first_line)
        try:
            rows = _decode_csv_fast(stripped, text, delimiter, first_line.count(delimiter) + 1)
        except ValueError:
            rows = _decode_csv_slowly(text, delimiter)  # empty fields, or a real error with its message
    except RequestError:
        raise
    except Exception as exc:
        raise _load_failure(CSV, exc) from exc
    if rows.size == 0:
        raise _load_failure(CSV, ValueError("no values in the payload"))
    return rows


#: From this body size on pyarrow's reader wins (it costs ~2 ms to set up; numpy's ~30 us).
_ARROW_CSV_BYTES = 64 * 1024


@functools.cache
def _arrow() -> tuple[Any, Any]:
    """pyarrow and its CSV reader, with every core for parsing: Arrow sizes its pool by OMP_NUM_THREADS,
    which model servers set to 1 for one-row predictions, and a big body parses ~2x faster on two."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    pa.set_cpu_count(max(os.cpu_count() or 1, 1))
    return pa, pa_csv


def _decode_csv_fast(body: bytes, text: str, delimiter: str, columns: int) -> np.ndarray:
    """msgspec's JSON reader, else numpy's C reader, for small bodies; pyarrow's (threaded) for large ones.

    All are strict: a ragged row raises ValueError and the slow path reports it in
    the container's words. Empty fields make numpy raise too (same fallback); pyarrow
    reads them as missing values, which is what the slow path makes of them.
    """
    if len(body) < _ARROW_CSV_BYTES:
        rows = _decode_as_json(body) if delimiter == "," else None
        if rows is not None:
            return rows
        return np.loadtxt(io.StringIO(text), delimiter=delimiter, dtype=np.float32, ndmin=2, comments=None)
    pa, pa_csv = _arrow()

    names = [str(i) for i in range(columns)]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(body),
            read_options=pa_csv.ReadOptions(column_names=names, block_size=1 << 20),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False),
            # Only an empty field is missing: words such as NA must fail as they do in the container.
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32()), null_values=[""]),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(str(exc)) from exc
    rows = np.empty((table.num_rows, len(names)), dtype=np.float32)
    start = 0
    for batch in table.to_batches():  # block by block: each column chunk is copied once, cache-friendly
        block = rows[start : start + batch.num_rows]
        for index, column in enumerate(batch.columns):
            block[:, index] = column.to_numpy(zero_copy_only=False)  # nulls (empty fields) arrive as NaN
        start += batch.num_rows
    return rows


_JSON_ROW = msgspec.json.Decoder(list[float])
_JSON_ROWS = msgspec.json.Decoder(list[list[float]])


def _decode_as_json(body: bytes) -> np.ndarray | None:
    """Comma-separated plain numbers are JSON arrays too, which msgspec reads ~6x faster than
    ``np.loadtxt`` (both round each value to the nearest double, then to float32). None for
    anything JSON does not take (nan, +1, .5, empty fields, blank lines, ragged rows): numpy decides."""
    try:
        with np.errstate(over="ignore"):  # beyond float32's range is inf, as numpy's reader makes it, quietly
            if b"\n" not in body:
                return np.array(_JSON_ROW.decode(b"[" + body + b"]"), dtype=np.float32).reshape(1, -1)
            rows = np.array(_JSON_ROWS.decode(b"[[" + body.replace(b"\n", b"],[") + b"]]"), dtype=np.float32)
    except (msgspec.DecodeError, ValueError):
        return None
    return rows if rows.ndim == 2 and rows.shape[1] > 0 else None


def _decode_csv_slowly(text: str, delimiter: str) -> np.ndarray:
    # The container's own algorithm: split, empty string -> NaN, cast; its errors are the reference.
    table = [
        ["nan" if field.strip() == "" else field for field in line.split(delimiter)]
        for line in text.split("\n")
    ]
    return np.array(table, dtype=np.float64).astype(np.float32)


def decode_libsvm(body: bytes) -> SparseRows:
    """``label idx:value ...`` lines; a leading label token is ignored, indices are used as given."""
    try:
        lines = body.strip().decode("utf-8").split("\n")
        indptr = [0]
        indices: list[int] = []
        values: list[float] = []
        for line in lines:
            for token in line.split():
                if ":" in token:
                    index, _, value = token.partition(":")
                    indices.append(int(index))
                    values.append(float(value))
            indptr.append(len(indices))
        if indices and min(indices) < 0:
            raise ValueError(f"negative feature index {min(indices)}")
    except Exception as exc:
        raise _load_failure(LIBSVM, exc) from exc
    return SparseRows(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(indices, dtype=np.int32),
        np.asarray(values, dtype=np.float32),
        max(indices) + 1 if indices else 0,
    )


def _features_of(item: object) -> object:
    """The feature list of one JSON instance: a bare list or SageMaker's ``{"features": [...]}``."""
    if isinstance(item, dict):
        if "features" not in item:
            raise ValueError('an instance object needs a "features" list')
        return item["features"]
    return item


def _json_rows(instances: list) -> np.ndarray:
    rows = [_features_of(item) for item in instances]
    if rows and not isinstance(rows[0], list):
        rows = [rows]  # one instance given as a flat list of numbers
    table = [[math.nan if value is None else value for value in row] for row in rows]
    array = np.array(table, dtype=np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ValueError("expected a list of instances, each a list of numbers")
    return array


def decode_json(body: bytes) -> np.ndarray:
    """``{"instances": [...]}``, ``{"features": [...]}``, ``[[...], ...]`` or ``[...]``."""
    try:
        document = json.loads(body)
        if isinstance(document, dict):
            document = document.get("instances", [document])
        if not isinstance(document, list):
            raise ValueError("expected a JSON list or object")
        return _json_rows(document)
    except Exception as exc:
        raise _load_failure(JSON, exc) from exc


def decode_jsonlines(body: bytes) -> np.ndarray:
    """One instance per line: ``[...]`` or ``{"features": [...]}``."""
    try:
        lines = [line for line in body.decode("utf-8").splitlines() if line.strip()]
        return _json_rows([_as_row(json.loads(line)) for line in lines])
    except Exception as exc:
        raise _load_failure(JSONLINES, exc) from exc


def _as_row(item: object) -> object:
    features = _features_of(item)
    if not isinstance(features, list):
        raise ValueError("each line must hold one instance")
    return features


def decode_recordio(body: bytes) -> SparseRows:
    """SageMaker RecordIO-protobuf records; dense and sparse ``features`` tensors, labels ignored."""
    # The framing and protobuf walking live with the training data reader.
    from sagestack.algorithms.xgboost import recordio

    try:
        indptr = [0]
        chunks_i: list[np.ndarray] = []
        chunks_v: list[np.ndarray] = []
        width = 0
        for payload in recordio._recordio_payloads(bytes(body)):
            features, _ = recordio._record_maps(payload)
            values, keys, shape = recordio._tensor(recordio._pick(features, "features"))
            if keys and len(keys) != values.size:
                raise ValueError(f"record {len(indptr)} has {len(keys)} keys for {values.size} values")
            chunks_i.append(
                np.asarray(keys, dtype=np.int32) if keys else np.arange(values.size, dtype=np.int32)
            )
            chunks_v.append(values.astype(np.float32))
            indptr.append(indptr[-1] + values.size)
            width = max(width, shape[0] if shape else values.size, int(chunks_i[-1].max(initial=-1)) + 1)
        if len(indptr) == 1:
            raise ValueError("no records in the payload")
    except Exception as exc:
        # The container's wording for this format has no newlines.
        raise RequestError(
            415,
            "Loading recordio-protobuf data failed with Exception, please ensure data is in "
            f"recordio-protobuf format: {type(exc)} {exc}",
        ) from exc
    return SparseRows(
        np.asarray(indptr, dtype=np.int64), np.concatenate(chunks_i), np.concatenate(chunks_v), width
    )


_DECODERS: dict[str, Callable[[bytes], Rows]] = {
    CSV: decode_csv,
    LIBSVM: decode_libsvm,
    RECORDIO: decode_recordio,
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
}


# --------------------------------------------------------------------------- prediction


def _xgb_message(raw: bytes | str) -> str:
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
            raise xgb.core.XGBoostError(_xgb_message(self._lib.XGBGetLastError()))

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


# --------------------------------------------------------------------------- the model


PKL_FORMAT, XGB_FORMAT = "pkl_format", "xgb_format"
_VOTING_OBJECTIVES = {"multi:softmax", "binary:hinge"}


class ModelLoadError(Exception):
    pass


@dataclass
class LoadedModel:
    boosters: list[xgb.Booster]
    formats: list[str]
    #: One per booster; the model server may replace the list with compiled predictors.
    predictors: list[NativePredictor | DMatrixPredictor | Predictor]
    paths: list[Path]
    objective: str
    num_class: str
    num_features: int

    @property
    def pickled(self) -> bool:
        # The container checks feature counts only when its first model came from a pickle.
        return self.formats[0] == PKL_FORMAT

    def describe(self) -> str:
        trees = sum(b.num_boosted_rounds() for b in self.boosters)
        kinds = sorted({type(p).__name__ for p in self.predictors})
        return (
            f"files={','.join(p.name for p in self.paths)} format={','.join(self.formats)} "
            f"objective={self.objective} features={self.num_features} rounds={trees} "
            f"predictor={','.join(kinds)}"
        )


def model_files(model_dir: Path, ensemble: bool) -> list[Path]:
    """Regular, non-hidden files: all of them for an ensemble, else ``xgboost-model`` (or the first)."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ModelLoadError(f"no model file in {model_dir}")
    if ensemble:
        return files
    named = [p for p in files if p.name == MODEL_FILE]
    return named or files[:1]


def load_booster(path: Path) -> tuple[xgb.Booster, str]:
    """A pickled booster (images up to 1.2) or any format ``Booster.load_model`` reads."""
    raw = path.read_bytes()
    pickle_error: Exception | None = None
    if raw[:1] == b"\x80":  # pickle protocol 2+; saved models start with '{' (JSON/UBJSON) or "binf"
        try:
            booster = pickle.loads(raw)  # the user's own artifact, as the container trusts it too
            if isinstance(booster, xgb.Booster):
                return booster, PKL_FORMAT
            pickle_error = TypeError(f"the pickle holds a {type(booster).__name__}, not an xgboost Booster")
        except Exception as exc:
            pickle_error = exc
    try:
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster, XGB_FORMAT
    except Exception as exc:
        raise ModelLoadError(
            f"Model {path} cannot be loaded:\nPickle load error={pickle_error or 'not a pickle'}"
            f"\nXGB load model error={_xgb_message(str(exc))}"
        ) from exc


def load_model(model_dir: Path, ensemble: bool = True, log: Callable[[str], None] = print) -> LoadedModel:
    paths = model_files(model_dir, ensemble)
    boosters, formats = [], []
    for path in paths:
        booster, fmt = load_booster(path)
        booster.set_param({"nthread": 1})  # one request at a time per process; threads only add overhead
        boosters.append(booster)
        formats.append(fmt)
    learner = json.loads(boosters[0].save_config())["learner"]
    return LoadedModel(
        boosters=boosters,
        formats=formats,
        predictors=[choose_predictor(b, log) for b in boosters],
        paths=paths,
        objective=learner["objective"]["name"],
        num_class=str(learner["learner_model_param"].get("num_class", "")),
        num_features=boosters[0].num_features(),
    )


# --------------------------------------------------------------------------- selectable output

PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES = (
    "predicted_label",
    "labels",
    "probability",
    "probabilities",
)
RAW_SCORE, RAW_SCORES, PREDICTED_SCORE = "raw_score", "raw_scores", "predicted_score"
_CLASSIFICATION = [PREDICTED_LABEL, LABELS, RAW_SCORE, RAW_SCORES]
_WITH_PROBABILITIES = [PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES]
VALID_KEYS: dict[str, list[str]] = {
    "reg:squarederror": [PREDICTED_SCORE],
    "reg:logistic": [PREDICTED_SCORE],
    "reg:gamma": [PREDICTED_SCORE],
    "reg:absoluteerror": [PREDICTED_SCORE],
    "reg:tweedie": [PREDICTED_SCORE],
    "binary:logistic": _WITH_PROBABILITIES,
    "binary:logitraw": _CLASSIFICATION,
    "binary:hinge": _CLASSIFICATION,
    "multi:softmax": _CLASSIFICATION,
    "multi:softprob": _WITH_PROBABILITIES,
}
# The order in which keys appear in each JSON object, whatever order was asked for.
_KEY_ORDER = [PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES, PREDICTED_SCORE]


def _labels(objective: str, num_class: str) -> object:
    if "binary:" in objective:
        return [0, 1]
    if "multi:" in objective and num_class:
        return list(range(int(num_class)))
    return math.nan


def _predicted_label(objective: str, row: np.ndarray) -> object:
    if objective in ("binary:hinge", "multi:softmax"):
        return row.item()
    if objective == "binary:logistic":
        return int(row > 0.5)
    if objective == "binary:logitraw":
        return int(row > 0)
    if objective == "multi:softprob":
        return int(np.argmax(row))
    return math.nan


def _probability(objective: str, row: np.ndarray) -> object:
    if objective == "multi:softprob":
        return row.max().item()
    return row.item() if objective == "binary:logistic" else math.nan


def _probabilities(objective: str, row: np.ndarray) -> object:
    if objective == "multi:softprob":
        return row.tolist()
    if objective == "binary:logistic":
        return [1.0 - row.item(), row.item()]
    return math.nan


_ONE_SCORE = ("binary:logitraw", "binary:hinge", "binary:logistic", "multi:softmax")


def _raw_score(objective: str, row: np.ndarray) -> object:
    if objective == "multi:softprob":
        return row.max().item()
    return row.item() if objective in _ONE_SCORE else math.nan


def _raw_scores(objective: str, row: np.ndarray) -> object:
    if objective == "multi:softprob":
        return row.tolist()
    if objective in _ONE_SCORE:
        return [1.0 - row.item(), row.item()]  # the container's pairing, even for margins
    return math.nan


def select_outputs(preds: np.ndarray, keys: Sequence[str], objective: str, num_class: str) -> list[dict]:
    """One dict per row with the requested keys; keys the objective cannot give are NaN."""
    if objective not in VALID_KEYS:
        raise ValueError(f"Objective `{objective}` unsupported for selectable inference predictions.")
    valid = [k for k in _KEY_ORDER if k in keys and k in VALID_KEYS[objective]]
    invalid = [k for k in dict.fromkeys(keys) if k not in VALID_KEYS[objective]]
    labels = _labels(objective, num_class)
    getters: dict[str, Callable[[np.ndarray], object]] = {
        PREDICTED_LABEL: lambda r: _predicted_label(objective, r),
        LABELS: lambda r: labels,
        PROBABILITY: lambda r: _probability(objective, r),
        PROBABILITIES: lambda r: _probabilities(objective, r),
        RAW_SCORE: lambda r: _raw_score(objective, r),
        RAW_SCORES: lambda r: _raw_scores(objective, r),
        PREDICTED_SCORE: lambda r: r.item(),
    }
    chosen = [(k, getters[k]) for k in valid]
    rows = []
    for row in preds:
        out = {key: get(row) for key, get in chosen}
        for key in invalid:
            out[key] = math.nan
        rows.append(out)
    return rows


def _selected_csv(rows: list[dict], keys: Sequence[str], batch: bool) -> bytes:
    def cell(value: object) -> str:
        return f'"{value}"' if isinstance(value, list) else str(value)

    text = "\n".join(",".join(cell(row[k]) for k in keys) for row in rows)
    return (text + "\n" if batch else text).encode()


# --------------------------------------------------------------------------- encoders


def _csv_scores(preds: np.ndarray) -> bytes:
    """One row per line, trailing newline; floats as Python prints them (the container's csv.writer)."""
    values = preds.tolist()
    if preds.ndim == 1:
        return b"\n".join(_float_texts(preds, values)) + b"\n"
    return ("\n".join(",".join(map(repr, row)) for row in values) + "\n").encode()


#: Up to this many scores repr is cheaper than msgspec plus the range check (a one-row request: 1 vs 10 us).
_REPR_AT_MOST = 16


def _float_texts(preds: np.ndarray, values: list[float]) -> list[bytes]:
    """``repr(v).encode()`` of each value, ~10x faster for thousands of rows: msgspec writes the same
    shortest round-trip digits, and the same text wherever repr does not switch to an exponent
    (below 1e-4, from 1e16 on), so values outside [1e-3, 1e15) and non-finite ones are left to repr."""
    if len(values) <= _REPR_AT_MOST:
        return [repr(value).encode() for value in values]
    texts = msgspec.json.encode(values)[1:-1].split(b",")
    magnitude = np.abs(preds.astype(np.float64))
    for index in np.flatnonzero(~((magnitude >= 1e-3) & (magnitude < 1e15)) & (magnitude != 0.0)):
        texts[index] = repr(values[index]).encode()
    return texts


def _json_scores(preds: np.ndarray) -> bytes:
    return json.dumps({"predictions": [{"score": v} for v in preds.tolist()]}).encode()


def _jsonlines(objects: list) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objects).encode()


def _pb_key(number: int, wire: int) -> bytes:
    return bytes([(number << 3) | wire])


def _pb_len(data: bytes) -> bytes:
    out = bytearray()
    n = len(data)
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out) + data


def _recordio_frame(payload: bytes) -> bytes:
    header = np.array([0xCED7230A, len(payload)], dtype="<u4").tobytes()
    return header + payload + b"\0" * (-len(payload) % 4)


def encode_recordio(rows: list[dict]) -> bytes:
    """Each row a Record whose ``label`` map holds one float32 tensor per key (SageMaker's layout)."""
    frames = []
    for row in rows:
        record = b""
        for key, value in row.items():
            values = value if isinstance(value, list) else [value]
            tensor = _pb_key(1, 2) + _pb_len(
                np.asarray(values, dtype="<f4").tobytes()
            )  # Float32Tensor.values
            value_msg = _pb_key(2, 2) + _pb_len(tensor)  # Value.float32_tensor
            entry = _pb_key(1, 2) + _pb_len(key.encode()) + _pb_key(2, 2) + _pb_len(value_msg)
            record += _pb_key(2, 2) + _pb_len(entry)  # Record.label map entry
        frames.append(_recordio_frame(record))
    return b"".join(frames)


def _score_rows(preds: np.ndarray) -> list[dict]:
    return [{"score": v} for v in preds.tolist()]


# --------------------------------------------------------------------------- the handler


class XGBoostHandler:
    """One loaded model and the serving settings; ``invoke`` is the whole /invocations logic."""

    def __init__(self, model: LoadedModel, settings: ServingSettings | None = None) -> None:
        self.model = model
        self.settings = settings or ServingSettings()
        self._content_types: dict[str | None, str | RequestError] = {}

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, env: Mapping[str, str] = os.environ, log: Callable[[str], None] = print
    ) -> XGBoostHandler:
        settings = ServingSettings.from_env(env)
        return cls(load_model(Path(model_dir), settings.ensemble, log), settings)

    def execution_parameters(self) -> Response:
        body = {
            "MaxConcurrentTransforms": os.cpu_count() or 1,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": self.settings.max_content_length // (1024 * 1024),
        }
        return Response(200, json.dumps(body).encode(), APP_JSON)

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> Response:
        """The response to ``POST /invocations``; never raises for bad input."""
        if not body:
            return Response(204, b"")
        try:
            kind = self._kind(content_type)
            rows = _DECODERS[kind](body)
            preds = self._predict(rows, kind)
            media = self._accept(accept)
        except RequestError as exc:
            return Response(exc.status, str(exc).encode(), ERROR_CONTENT_TYPE)
        return self._encode(preds, media)

    # ----------------------------------------------------------------- steps

    def _kind(self, header: str | None) -> str:
        # Clients send the same header value every time: parse each distinct one once.
        cached = self._content_types.get(header)
        if cached is None:
            try:
                cached = parse_content_type(header)
            except RequestError as exc:
                cached = exc
            if len(self._content_types) < 64:
                self._content_types[header] = cached
        if isinstance(cached, RequestError):
            raise cached
        return cached

    def _accept(self, header: str | None) -> str:
        media = header.partition(";")[0].strip() if header else ""
        if not media or media == "*/*":
            return self.settings.default_accept
        if media.lower() not in SUPPORTED_ACCEPTS:
            raise RequestError(
                406,
                f"Accept type {media} is not supported. "
                f"Please use supported accept types: {SUPPORTED_ACCEPTS}.",
            )
        return media.lower()

    def _predict(self, rows: Rows, kind: str) -> np.ndarray:
        try:
            self._check_width(rows, kind)
            outputs = [self._predict_one(p, rows) for p in self.model.predictors]
        except RequestError:
            raise
        except Exception as exc:
            raise RequestError(400, f"Unable to evaluate payload provided: {_xgb_message(str(exc))}") from exc
        return outputs[0] if len(outputs) == 1 else self._combine(outputs)

    def _check_width(self, rows: Rows, kind: str) -> None:
        model = self.model.num_features
        sparse = isinstance(rows, SparseRows)
        width = rows.num_col if sparse else rows.shape[1]
        if sparse and width > model:
            # Never accepted: a sparse index past the model's features would be read out of bounds.
            detail = (
                f"Feature size of {kind} inference data {width} is larger than feature size of trained model"
            )
        elif not sparse and (width > model or (self.model.pickled and width < model - 1)):
            # Pickled models keep the container's strict rule; others accept fewer columns, as DMatrix does.
            detail = (
                f"Feature size of {kind} inference data {width} is not consistent "
                "with feature size of trained model"
            )
        else:
            return
        raise RequestError(400, f"Unable to evaluate payload provided: {detail} {model}.")

    def _predict_one(self, predictor: Predictor, rows: Rows) -> np.ndarray:
        width = self.model.num_features
        if isinstance(rows, SparseRows):
            return predictor.sparse(SparseRows(rows.indptr, rows.indices, rows.values, width))
        if rows.shape[1] < width:  # trailing features absent: missing, as DMatrix prediction treats them
            padded = np.full((rows.shape[0], width), np.nan, dtype=np.float32)
            padded[:, : rows.shape[1]] = rows
            rows = padded
        return predictor.dense(np.ascontiguousarray(rows, dtype=np.float32))

    def _combine(self, outputs: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(outputs)
        if self.model.objective in _VOTING_OBJECTIVES:
            # Majority vote per row; ties go to the smallest class, as scipy.stats.mode breaks them.
            classes = np.unique(stacked)
            counts = (stacked[None, ...] == classes.reshape(-1, *([1] * stacked.ndim))).sum(axis=1)
            return classes[np.argmax(counts, axis=0)].astype(np.float32)
        return stacked.mean(axis=0)

    def _encode(self, preds: np.ndarray, media: str) -> Response:
        content_type = _RESPONSE_TYPES.get(media, media)
        settings = self.settings
        if settings.output_keys is not None:
            try:
                rows = select_outputs(preds, settings.output_keys, self.model.objective, self.model.num_class)
                return Response(200, self._encode_selected(rows, media), content_type)
            except Exception as exc:
                return Response(500, str(exc).encode(), ERROR_CONTENT_TYPE)
        if settings.batch:
            return Response(200, ("\n".join(map(str, preds.tolist())) + "\n").encode(), content_type)
        if media == TEXT_CSV:
            return Response(200, _csv_scores(preds), content_type)
        if media == APP_JSON:
            return Response(200, _json_scores(preds), content_type)
        if media == APP_JSONLINES:
            return Response(200, _jsonlines(_score_rows(preds)), content_type)
        if media == APP_RECORDIO:
            return Response(200, encode_recordio(_score_rows(preds)), content_type)
        # Only SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT can lead here: the container fails it the same way.
        return Response(
            500, f"Cannot encode predictions into accept type '{media}'.".encode(), ERROR_CONTENT_TYPE
        )

    def _encode_selected(self, rows: list[dict], media: str) -> bytes:
        if media == APP_JSON:
            return json.dumps({"predictions": rows}).encode()
        if media == APP_JSONLINES:
            return _jsonlines(rows)
        if media == APP_RECORDIO:
            return encode_recordio(rows)
        if media == TEXT_CSV:
            return _selected_csv(rows, self.settings.output_keys or (), self.settings.batch)
        raise RuntimeError(f"Cannot encode selected predictions into accept type '{media}'.")
