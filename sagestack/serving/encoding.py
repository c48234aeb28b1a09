"""Predictions to response bodies: CSV, JSON, JSON Lines and RecordIO-protobuf, and selectable output.

``SAGEMAKER_INFERENCE_OUTPUT`` selects per-row keys (predicted_label,
probabilities ...); floats print as the container's ``csv.writer`` prints them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import msgspec
import numpy as np

from sagestack.algorithms.xgboost.recordio import encode_label_records

TEXT_CSV, APP_JSON, APP_JSONLINES, APP_RECORDIO = (
    "text/csv",
    "application/json",
    "application/jsonlines",
    "application/x-recordio-protobuf",
)
SUPPORTED_ACCEPTS = [APP_JSON, APP_JSONLINES, APP_RECORDIO, TEXT_CSV]
# The container's Flask responses carry a charset for text types only.
RESPONSE_TYPES = {TEXT_CSV: "text/csv; charset=utf-8"}
ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"


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


def selected_csv(rows: list[dict], keys: Sequence[str], batch: bool) -> bytes:
    def cell(value: object) -> str:
        return f'"{value}"' if isinstance(value, list) else str(value)

    text = "\n".join(",".join(cell(row[k]) for k in keys) for row in rows)
    return (text + "\n" if batch else text).encode()


# --------------------------------------------------------------------------- encoders


def csv_scores(preds: np.ndarray) -> bytes:
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


def json_scores(preds: np.ndarray) -> bytes:
    return json.dumps({"predictions": [{"score": v} for v in preds.tolist()]}).encode()


def jsonlines(objects: list) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objects).encode()


def score_rows(preds: np.ndarray) -> list[dict]:
    return [{"score": v} for v in preds.tolist()]


def encode_scores(preds: np.ndarray, media: str) -> bytes | None:
    """The body of plain scores in ``media``; None for a media type nothing encodes."""
    if media == TEXT_CSV:
        return csv_scores(preds)
    if media == APP_JSON:
        return json_scores(preds)
    if media == APP_JSONLINES:
        return jsonlines(score_rows(preds))
    if media == APP_RECORDIO:
        return encode_label_records(score_rows(preds))
    return None


def encode_selected(rows: list[dict], media: str, keys: Sequence[str], batch: bool) -> bytes:
    """The body of ``SAGEMAKER_INFERENCE_OUTPUT`` rows (see :func:`select_outputs`) in ``media``."""
    if media == APP_JSON:
        return json.dumps({"predictions": rows}).encode()
    if media == APP_JSONLINES:
        return jsonlines(rows)
    if media == APP_RECORDIO:
        return encode_label_records(rows)
    if media == TEXT_CSV:
        return selected_csv(rows, keys, batch)
    raise RuntimeError(f"Cannot encode selected predictions into accept type '{media}'.")
