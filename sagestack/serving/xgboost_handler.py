"""Request handling of SageMaker's built-in XGBoost algorithm, as pure functions of bytes.

``XGBoostHandler.invoke(body, content_type, accept)`` returns the status, body
and content type the built-in container (image 3.0-5) would answer with:

* an empty body is 204;
* a payload that cannot be decoded, or a Content-Type the algorithm does not
  read, is 415 (:mod:`.decoding`);
* a prediction failure (too many features ...) is 400
  ``Unable to evaluate payload provided: ...``;
* an Accept it cannot produce is 406, checked *after* predicting, as there;
* ``SAGEMAKER_INFERENCE_OUTPUT`` selects per-row keys (predicted_label,
  probabilities ...), ``SAGEMAKER_BATCH`` forces one line per row (:mod:`.encoding`).

The rooms: :mod:`.decoding` (body -> rows), :mod:`.predictors` (rows -> scores),
:mod:`.model` (model directory -> boosters and predictors), :mod:`.encoding`
(scores -> body); this module ties them to the serving settings.

Deliberate differences, all additions: JSON and JSON Lines requests are read
(the container answers them 415), JSON Lines and RecordIO responses work
without ``SAGEMAKER_INFERENCE_OUTPUT`` (the container fails them with 500),
CSV with one column is accepted (its delimiter sniffer rejects it), and a row
with fewer features than the model is padded with missing values for every
model format (what ``xgb.DMatrix`` prediction does for non-pickled models).

Speed matters here: a one-row CSV request is the common case. The hot path is
a dict lookup for the headers, one msgspec JSON decode of the row and one call into
libxgboost's in-place prediction through ctypes (:mod:`.predictors`). The model
server then swaps in trees compiled to C (:mod:`sagestack.serving.compiled`),
which predict a row ~40x faster still.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sagestack.serving.decoding import DECODERS, RequestError, parse_content_type
from sagestack.serving.encoding import (
    APP_JSON,
    ERROR_CONTENT_TYPE,
    RESPONSE_TYPES,
    SUPPORTED_ACCEPTS,
    TEXT_CSV,
    encode_scores,
    encode_selected,
    select_outputs,
)
from sagestack.serving.model import LoadedModel, load_model
from sagestack.serving.predictors import Predictor, xgb_message
from sagestack.serving.rows import Rows, SparseRows

DEFAULT_MAX_CONTENT_LENGTH = 6 * 1024 * 1024


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str | None = None


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


# --------------------------------------------------------------------------- the handler

#: Ensembles of these objectives vote (their outputs are classes); the others average.
_VOTING_OBJECTIVES = {"multi:softmax", "binary:hinge"}


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
            rows = DECODERS[kind](body)
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
            raise RequestError(400, f"Unable to evaluate payload provided: {xgb_message(str(exc))}") from exc
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
        content_type = RESPONSE_TYPES.get(media, media)
        settings = self.settings
        if settings.output_keys is not None:
            try:
                rows = select_outputs(preds, settings.output_keys, self.model.objective, self.model.num_class)
                return Response(200, encode_selected(rows, media, settings.output_keys, settings.batch), content_type)
            except Exception as exc:
                return Response(500, str(exc).encode(), ERROR_CONTENT_TYPE)
        if settings.batch:
            return Response(200, ("\n".join(map(str, preds.tolist())) + "\n").encode(), content_type)
        body = encode_scores(preds, media)
        if body is not None:
            return Response(200, body, content_type)
        # Only SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT can lead here: the container fails it the same way.
        return Response(
            500, f"Cannot encode predictions into accept type '{media}'.".encode(), ERROR_CONTENT_TYPE
        )
