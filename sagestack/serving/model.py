"""Loading a model directory: pickled or saved boosters, one or an ensemble, each with its predictor."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xgboost as xgb

from sagestack.serving.predictors import DMatrixPredictor, NativePredictor, Predictor, choose_predictor, xgb_message

MODEL_FILE = "xgboost-model"
PKL_FORMAT, XGB_FORMAT = "pkl_format", "xgb_format"


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
            f"\nXGB load model error={xgb_message(str(exc))}"
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

