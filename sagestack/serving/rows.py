"""The rows a request decodes to and a predictor takes: dense float32 arrays or CSR rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
