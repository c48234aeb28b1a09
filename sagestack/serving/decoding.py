"""Request bodies to rows: the Content-Types SageMaker's XGBoost container reads, in its words.

A payload that cannot be decoded, or a Content-Type the algorithm does not read,
is a ``RequestError(415)`` carrying the container's ``Loading csv data failed ...``
messages. JSON and JSON Lines requests are read too (the container answers them
415), and CSV with one column is accepted (its delimiter sniffer rejects it).

Speed matters: a one-row CSV request is the common case, decoded by one msgspec
JSON decode of the row; large CSV bodies are parsed by pyarrow's reader, several
times faster than ``np.loadtxt`` on thousands of rows.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

# The RecordIO framing and protobuf walking live with the training data reader.
from sagestack.algorithms.xgboost import recordio
from sagestack.serving.rows import Rows, SparseRows

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


class RequestError(Exception):
    """A failure that becomes a non-2xx response with ``str(self)`` as the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
    try:
        indptr = [0]
        chunks_i: list[np.ndarray] = []
        chunks_v: list[np.ndarray] = []
        width = 0
        for values, keys, shape in recordio.feature_tensors(bytes(body)):
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


DECODERS: dict[str, Callable[[bytes], Rows]] = {
    CSV: decode_csv,
    LIBSVM: decode_libsvm,
    RECORDIO: decode_recordio,
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
}

