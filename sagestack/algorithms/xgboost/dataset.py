"""What a channel reads into: a :class:`DataSet` (features, labels, weights, groups), the format names,
and the errors that name the offending file and line in SageMaker's words."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sagestack.algorithms.errors import UserError

CSV = "csv"
LIBSVM = "libsvm"
PARQUET = "parquet"
RECORDIO_PROTOBUF = "recordio-protobuf"

_FORMAT_TITLE = {CSV: "CSV", LIBSVM: "LIBSVM", PARQUET: "Parquet", RECORDIO_PROTOBUF: "RecordIO-protobuf"}


# ---------------------------------------------------------------- data set


@dataclass
class Part:
    """Rows ``first_row .. first_row + n_rows`` came from ``path`` (for error messages)."""

    path: Path
    first_row: int
    n_rows: int


@dataclass
class DataSet:
    """One channel's data: features (dense float32 or CSR), labels and optional weights/groups."""

    features: np.ndarray | sp.csr_matrix
    labels: np.ndarray
    weights: np.ndarray | None = None
    qid: np.ndarray | None = None
    fmt: str = CSV
    root: Path = Path()
    parts: list[Part] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.features)

    def with_n_features(self, n: int) -> DataSet:
        """Widen a sparse matrix to ``n`` columns (libsvm shards may stop at different indices)."""
        if not self.is_sparse or n == self.n_features:
            return self
        f = self.features
        self.features = sp.csr_matrix((f.data, f.indices, f.indptr), shape=(f.shape[0], n))
        return self

    def locate(self, row: int) -> str:
        """``line 7 of file 'train/a.csv'`` for a row number of this data set."""
        for part in self.parts:
            if part.first_row <= row < part.first_row + part.n_rows:
                line = _nth_record_line(part.path, row - part.first_row, self.fmt)
                where = f"file '{display_name(part.path, self.root)}'"
                return f"line {line} of {where}" if line else f"record {row - part.first_row + 1} of {where}"
        return f"row {row + 1}"


def display_name(path: Path, root: Path) -> str:
    """A path as users know it: relative to the ``input/data`` directory when possible."""
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def _nth_record_line(path: Path, index: int, fmt: str) -> int | None:
    """1-based line number of the ``index``-th non-blank line (text formats only)."""
    if fmt not in (CSV, LIBSVM):
        return None
    seen = -1
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                seen += 1
                if seen == index:
                    return number
    return None


def format_error(fmt: str, path: Path, root: Path, line_no: int, line: str, detail: str = "") -> UserError:
    """SageMaker's wording (``First line '...' of file '...' is not 'CSV' format``), for any line."""
    title = _FORMAT_TITLE[fmt]
    which = "First line" if line_no == 1 else f"Line {line_no}"
    snippet = line.rstrip("\r\n")[:50]
    text = (
        f"{which} '{snippet}...' of file '{display_name(path, root)}' is not '{title}' format. "
        f"Please ensure the file is in '{title}' format."
    )
    return UserError(f"{text} ({detail})" if detail else text)


def load_error(fmt: str, path: Path, root: Path, exc: BaseException) -> UserError:
    return UserError(
        f"Failed to load {fmt} data with exception:\nfile '{display_name(path, root)}': {exc}"
    )


def check_finite(data: DataSet, column: np.ndarray | None, what: str) -> None:
    if column is None:
        return
    bad = np.flatnonzero(~np.isfinite(column))
    if bad.size:
        row = int(bad[0])
        raise UserError(f"Missing or invalid {what} ({column[row]}) on {data.locate(row)}.")

