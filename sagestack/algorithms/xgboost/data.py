"""Channel readers: the files of one channel directory into features, labels and weights.

Formats (SageMaker's names; the label always comes first):

- ``text/csv``: no header, label in column 0, instance weight in column 1 when
  ``csv_weights=1``; the delimiter is sniffed from the first line.
- ``text/libsvm`` (the default): ``<label>[:<weight>] [qid:<q>] <index>:<value> ...``
  with 0-based feature indices, as xgboost reads them.
- ``application/x-parquet``: column 0 is the label (needs pyarrow).
- ``application/x-recordio-protobuf``: SageMaker's RecordIO-wrapped ``Record``
  protobufs with float32/float64/int32 tensors, dense or sparse.

A channel directory may hold any number of files in nested directories; they
are read in sorted path order. Hidden files are refused and files whose names
start with ``_`` (``_SUCCESS`` markers) are skipped, as SageMaker does.

The readers of each format are in :mod:`.readers`, the data set they fill and
its errors in :mod:`.dataset`; this module finds a channel's files, picks the
reader and checks the labels against the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sagestack.algorithms.errors import UserError
from sagestack.algorithms.xgboost.dataset import CSV, LIBSVM, PARQUET, RECORDIO_PROTOBUF, DataSet, check_finite
from sagestack.algorithms.xgboost.readers import READERS

#: Accepted ContentType values, in the order SageMaker's error message lists them.
CONTENT_TYPES: dict[str, str] = {
    "csv": CSV,
    "libsvm": LIBSVM,
    "parquet": PARQUET,
    "recordio-protobuf": RECORDIO_PROTOBUF,
    "text/csv": CSV,
    "text/libsvm": LIBSVM,
    "text/x-libsvm": LIBSVM,
    "application/x-parquet": PARQUET,
    "application/x-recordio-protobuf": RECORDIO_PROTOBUF,
}
DEFAULT_CONTENT_TYPE = "text/libsvm"


def parse_content_type(value: str | None) -> str:
    """The internal format name for a channel's ContentType (``None`` means libsvm).

    Parameters after ``;`` are allowed (``text/csv;label_size=1``); for CSV
    ``label_size`` must be 1 because the label is one column.
    """
    if value is None:
        return LIBSVM
    base, *params = (piece.strip() for piece in value.lower().split(";"))
    fmt = CONTENT_TYPES.get(base)
    if fmt is None:
        raise UserError(f"{value} is not an accepted ContentType: {', '.join(CONTENT_TYPES)}.")
    options = dict(p.partition("=")[::2] for p in params if p)
    if fmt == CSV and options.get("label_size", "1").strip() != "1":
        raise UserError(
            f"{value} is not an accepted csv ContentType. Optional parameter label_size must be equal to 1"
        )
    return fmt


# ---------------------------------------------------------------- files


def list_data_files(channel_dir: Path) -> list[Path]:
    """Data files under ``channel_dir`` (any depth), sorted; hidden files are an error."""
    if not channel_dir.exists():
        return []
    if channel_dir.is_file():
        return [channel_dir]
    files: list[Path] = []
    for path in sorted(channel_dir.rglob("*")):
        rel = path.relative_to(channel_dir)
        if any(part.startswith(".") for part in rel.parts):
            raise UserError("Hidden file found in the data path! Remove that before training.")
        if path.is_file() and _is_data_file(path.name):
            files.append(path)
    return files


def _is_data_file(name: str) -> bool:
    if name.startswith("_"):
        return False
    # xgboost's external-memory cache files are left next to the data by some jobs.
    return not (".cache" in name and ("dtrain" in name or "dval" in name))


def read_channel(
    channel_dir: Path, fmt: str, csv_weights: bool = False, files: list[Path] | None = None
) -> DataSet | None:
    """Read every data file of a channel; ``None`` when it holds no rows at all."""
    files = list_data_files(channel_dir) if files is None else files
    files = [f for f in files if f.stat().st_size > 0]
    if not files:
        return None
    reader = READERS[fmt]
    data = reader(files, channel_dir, csv_weights)
    if data is None or data.n_rows == 0:
        return None
    data.fmt, data.root = fmt, channel_dir
    return data


# ---------------------------------------------------------------- labels


#: objective -> (test on labels, what the rule says) for objectives with a restricted label range.
_LABEL_RULES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "binary:logistic": (lambda y: (y >= 0) & (y <= 1), "label must be in [0,1] for logistic regression"),
    "reg:logistic": (lambda y: (y >= 0) & (y <= 1), "label must be in [0,1] for logistic regression"),
    "binary:logitraw": (lambda y: (y >= 0) & (y <= 1), "label must be in [0,1] for binary classification"),
    "binary:hinge": (lambda y: (y >= 0) & (y <= 1), "label must be in [0,1] for binary classification"),
    "count:poisson": (lambda y: y >= 0, "label must be nonnegative for Poisson regression"),
    "reg:tweedie": (lambda y: y >= 0, "label must be nonnegative for Tweedie regression"),
    "reg:gamma": (lambda y: y > 0, "label must be positive for gamma regression"),
    "reg:squaredlogerror": (lambda y: y > -1, "label must be greater than -1 for rmsle regression"),
}


def validate_labels(data: DataSet, objective: str | None, num_class: int | None) -> None:
    """Reject labels the objective cannot use, naming the first bad line."""
    labels = data.labels
    check_finite(data, labels, "label")
    rule = _LABEL_RULES.get(objective or "")
    if objective in ("multi:softmax", "multi:softprob") and num_class:
        ok = (labels >= 0) & (labels < num_class) & (labels == np.floor(labels))
        text = f"label must be in [0, num_class) with num_class={num_class}"
    elif rule is not None:
        ok, text = rule[0](labels), rule[1]
    else:
        return
    bad = np.flatnonzero(~ok)
    if bad.size:
        row = int(bad[0])
        where = data.locate(row)
        raise UserError(f"Invalid label {labels[row]:g} on {where}: {text} (objective {objective}).")
