"""Prepare the UCI Adult data the way the seed tutorial does, for tests and demos.

The label (income ``>50K`` -> 1) goes first, categorical columns are one-hot
encoded with pandas ``get_dummies``, rows are shuffled with a fixed seed and
split 80/20 into train and test (26,048 / 6,513 rows). ``prepare`` also
splits the 80% again, 80/20, into the train and validation channels of a
training job. CSV files are written without header, as built-in XGBoost wants.

    python tests/unit/adult_prep.py ../shared/datasets/adult/adult.data.gz OUT_DIR

Data: Becker, B. & Kohavi, R. (1996). Adult. UCI Machine Learning Repository,
https://doi.org/10.24432/C5XW20, CC BY 4.0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
    "income",
]
LABEL = "income_gt_50k"
SEED = 1729


def load(gz_path: str | Path) -> pd.DataFrame:
    """The Adult records, label first, categoricals one-hot encoded, all float."""
    raw = pd.read_csv(gz_path, header=None, names=COLUMNS, skipinitialspace=True, compression="gzip")
    raw = raw.dropna(subset=["income"])
    label = (raw.pop("income").str.strip() == ">50K").astype(np.float32)
    features = pd.get_dummies(raw, dtype=np.float32)
    return pd.concat([label.rename(LABEL), features.astype(np.float32)], axis=1)


def split(frame: pd.DataFrame, fraction: float = 0.8, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle with ``seed`` and cut at ``fraction`` (int(fraction * rows) rows go first)."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    cut = int(fraction * len(shuffled))
    return shuffled.iloc[:cut], shuffled.iloc[cut:]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, header=False, index=False)
    return path


def prepare(gz_path: str | Path, out_dir: str | Path, seed: int = SEED) -> dict[str, Path]:
    """Write ``train/train.csv``, ``validation/validation.csv`` and ``test/test.csv`` under ``out_dir``."""
    out = Path(out_dir)
    train_all, test = split(load(gz_path), seed=seed)
    train, validation = split(train_all, seed=seed)
    return {
        "train": write_csv(train, out / "train" / "train.csv"),
        "validation": write_csv(validation, out / "validation" / "validation.csv"),
        "test": write_csv(test, out / "test" / "test.csv"),
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: adult_prep.py ADULT_DATA_GZ OUT_DIR")
    for name, written in prepare(sys.argv[1], sys.argv[2]).items():
        print(name, written)
