"""Channel readers of built-in XGBoost: formats, directory layouts, errors that name the line."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sagestack.algorithms.errors import UserError
from sagestack.algorithms.xgboost import data, readers
from tests.unit import adult_prep
from tests.unit.test_xgboost_train import ADULT_COPIES


def channel(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    root = tmp_path / "input" / "data" / "train"
    root.mkdir(parents=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def error_of(root: Path, fmt: str, **kwargs: bool) -> str:
    with pytest.raises(UserError) as caught:
        data.read_channel(root, fmt, **kwargs)
    return caught.value.message


# ---------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        (None, data.LIBSVM),
        ("text/libsvm", data.LIBSVM),
        ("text/x-libsvm", data.LIBSVM),
        ("libsvm", data.LIBSVM),
        ("csv", data.CSV),
        ("text/csv", data.CSV),
        ("text/csv;label_size=1", data.CSV),
        ("text/csv; charset=utf-8", data.CSV),
        ("application/x-parquet", data.PARQUET),
        ("application/x-recordio-protobuf", data.RECORDIO_PROTOBUF),
    ],
)
def test_accepted_content_types(content_type: str | None, fmt: str) -> None:
    assert data.parse_content_type(content_type) == fmt


def test_rejected_content_types() -> None:
    with pytest.raises(UserError) as caught:
        data.parse_content_type("application/json")
    assert caught.value.message == (
        "application/json is not an accepted ContentType: csv, libsvm, parquet, recordio-protobuf, text/csv, "
        "text/libsvm, text/x-libsvm, application/x-parquet, application/x-recordio-protobuf."
    )
    with pytest.raises(UserError, match="label_size must be equal to 1"):
        data.parse_content_type("text/csv;label_size=2")


# ---------------------------------------------------------------- csv


def test_csv_files_in_nested_directories_are_read_in_path_order(tmp_path: Path) -> None:
    root = channel(tmp_path, {
        "b.csv": "0,3,3\n",
        "a/part-1.csv": "1,1.5,nan\n\n0,2,\n",
        "_SUCCESS": "",
        "a/dtrain.cache.1": "junk",
    })
    ds = data.read_channel(root, data.CSV)
    assert ds.labels.tolist() == [1, 0, 0]
    np.testing.assert_array_equal(ds.features, [[1.5, np.nan], [2, np.nan], [3, 3]])
    assert ds.weights is None and ds.features.dtype == np.float32


def test_csv_weights_are_the_second_column(tmp_path: Path) -> None:
    ds = data.read_channel(channel(tmp_path, {"t.csv": "1,0.5,7,8\n0,2,9,10\n"}), data.CSV, csv_weights=True)
    assert ds.weights.tolist() == [0.5, 2.0]
    assert ds.features.tolist() == [[7, 8], [9, 10]]


@pytest.mark.parametrize("sep", ["\t", ";", "|", " "])
def test_csv_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    text = "\n".join(sep.join(row) for row in [["1", "2", "3"], ["0", "4", "5"]]) + "\n"
    ds = data.read_channel(channel(tmp_path, {"t.csv": text}), data.CSV)
    assert ds.features.tolist() == [[2, 3], [4, 5]]


def test_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    root = channel(tmp_path, {"ok.csv": "1,2,3\n", "sub/bad.csv": "1,2,3\n\n0,4,five\n"})
    assert error_of(root, data.CSV) == (
        "Line 3 '0,4,five...' of file 'train/sub/bad.csv' is not 'CSV' format. "
        "Please ensure the file is in 'CSV' format. (column 3 value 'five' is not a number)"
    )


def test_csv_header_line_is_reported_like_sagemaker(tmp_path: Path) -> None:
    root = channel(tmp_path, {"t.csv": "label,age,income\n1,2,3\n"})
    assert error_of(root, data.CSV).startswith(
        "First line 'label,age,income...' of file 'train/t.csv' is not 'CSV' format."
    )


def test_csv_rows_longer_than_the_first_and_files_of_other_widths_are_errors(tmp_path: Path) -> None:
    root = channel(tmp_path, {"t.csv": "1,2,3\n0,1,2,3\n"})
    assert "Line 2 '0,1,2,3...'" in error_of(root, data.CSV)
    root = channel(tmp_path / "two", {"a.csv": "1,2,3\n", "b.csv": "1,2\n"})
    assert "file 'train/b.csv' has 2 columns but file 'train/a.csv' has 3" in error_of(root, data.CSV)


def test_missing_labels_and_bad_labels_name_the_line(tmp_path: Path) -> None:
    ds = data.read_channel(channel(tmp_path, {"t.csv": "1,2\n\n,3\n"}), data.CSV)
    with pytest.raises(UserError, match=r"Missing or invalid label \(nan\) on line 3 of file 'train/t.csv'"):
        data.validate_labels(ds, "reg:squarederror", None)
    ds = data.read_channel(channel(tmp_path / "m", {"t.csv": "0,1\n1,1\n2,1\n3,1\n"}), data.CSV)
    data.validate_labels(ds, "multi:softmax", 4)
    with pytest.raises(UserError, match=r"Invalid label 3 on line 4 .*label must be in \[0, num_class\)"):
        data.validate_labels(ds, "multi:softmax", 3)
    with pytest.raises(UserError, match="label must be in \\[0,1\\] for logistic regression"):
        data.validate_labels(ds, "binary:logistic", None)


def test_empty_channels_have_no_data(tmp_path: Path) -> None:
    assert data.read_channel(tmp_path / "nowhere", data.CSV) is None
    assert data.read_channel(channel(tmp_path, {"empty.csv": "", "blank.csv": "\n\n"}), data.CSV) is None


def test_hidden_files_are_refused(tmp_path: Path) -> None:
    root = channel(tmp_path, {"t.csv": "1,2\n", ".ipynb_checkpoints/t.csv": "1,2\n"})
    assert error_of(root, data.CSV) == "Hidden file found in the data path! Remove that before training."


# ---------------------------------------------------------------- libsvm


def test_libsvm_labels_weights_and_zero_based_indices(tmp_path: Path) -> None:
    root = channel(tmp_path, {"t.libsvm": "1 0:1.5 3:2\n0:0.25 1:1\n\n  1\t2:-3e2  \n0"})
    ds = data.read_channel(root, data.LIBSVM)
    assert ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.weights.tolist() == [1, 0.25, 1, 1]
    assert ds.features.toarray().tolist() == [[1.5, 0, 0, 2], [0, 1, 0, 0], [0, 0, -300, 0], [0, 0, 0, 0]]


def test_libsvm_query_ids(tmp_path: Path) -> None:
    ds = data.read_channel(channel(tmp_path, {"r.txt": "2 qid:1 0:1\n0 qid:1 1:1\n1 qid:7 0:3\n"}), data.LIBSVM)
    assert ds.qid.tolist() == [1, 1, 7]
    assert ds.features.toarray().tolist() == [[1, 0], [0, 1], [3, 0]]


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        ("1 0:1\n0 1:x\n", 2, "'1:x' is not <index>:<value>"),
        ("1 0:1\n0 1:1:2\n", 2, "a token has more than one ':'"),
        ("1 0:1 3\n", 1, "a feature is not written as <index>:<value>"),
        ("1 -1:2\n", 1, "feature index is not an integer >= 0"),
        ("1 1.5:2\n", 1, "feature index is not an integer >= 0"),
        ("1 0:1\nyes 1:2\n", 2, "label 'yes' is not <label> or <label>:<weight>"),
        ("1 0:1\n0 1:1 qid:3\n", 2, "'qid:<id>' must directly follow the label"),
    ],
)
def test_libsvm_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, detail: str) -> None:
    message = error_of(channel(tmp_path, {"d/t.libsvm": text}), data.LIBSVM)
    which = "First line" if line == 1 else f"Line {line}"
    assert message.startswith(f"{which} '")
    assert "of file 'train/d/t.libsvm' is not 'LIBSVM' format." in message
    assert message.endswith(f"({detail})")


def test_libsvm_lines_are_counted_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "LIBSVM_CHUNK_BYTES", 64)
    lines = [f"{i % 2} 0:{i} 5:1" for i in range(40)] + ["1 2:x"]
    root = channel(tmp_path, {"t.libsvm": "\n".join(lines)})
    assert error_of(root, data.LIBSVM).startswith("Line 41 '1 2:x...'")
    (root / "t.libsvm").write_text("\n".join(lines[:-1]))
    ds = data.read_channel(root, data.LIBSVM)
    assert ds.n_rows == 40 and ds.features[:, 0].toarray().ravel().tolist() == list(range(40))


# ---------------------------------------------------------------- parquet and recordio


def test_parquet_label_is_the_first_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = channel(tmp_path, {})
    pq.write_table(pa.table({"y": [1.0, 0.0], "a": [2.0, 3.0], "b": [4, 5]}), root / "p1.parquet")
    pq.write_table(pa.table({"y": [1.0], "a": [6.0], "b": [7]}), root / "p2.parquet")
    ds = data.read_channel(root, data.PARQUET)
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.features.tolist() == [[2, 4], [3, 5], [6, 7]]
    (root / "p3.parquet").write_bytes(b"not parquet")
    message = error_of(root, data.PARQUET)
    assert message.startswith("Failed to load parquet data with exception:\nfile 'train/p3.parquet'")


def _recordio(payloads: list[bytes]) -> bytes:
    out = io.BytesIO()
    for payload in payloads:
        out.write(struct.pack("<II", 0xCED7230A, len(payload)))
        out.write(payload + b"\0" * (-len(payload) % 4))
    return out.getvalue()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def _record(label: float, values: list[float], keys: list[int] | None = None, width: int | None = None) -> bytes:
    """A protobuf Record written by hand (float32 tensors), like the SageMaker SDK writes it."""
    tensor = _field(1, struct.pack(f"<{len(values)}f", *values))
    if keys is not None:
        tensor += _field(2, b"".join(_varint(k) for k in keys)) + _field(3, _varint(width or 0))
    features = _field(1, b"values") + _field(2, _field(2, tensor))
    label_entry = _field(1, b"values") + _field(2, _field(2, _field(1, struct.pack("<f", label))))
    return _field(1, features) + _field(2, label_entry)


def test_recordio_protobuf_dense_and_sparse(tmp_path: Path) -> None:
    root = channel(tmp_path, {"dense.rec": _recordio([_record(1, [0.5, 2]), _record(0, [3, 4])])})
    ds = data.read_channel(root, data.RECORDIO_PROTOBUF)
    assert isinstance(ds.features, np.ndarray)
    assert ds.labels.tolist() == [1, 0] and ds.features.tolist() == [[0.5, 2], [3, 4]]
    root = channel(tmp_path / "s", {"sparse.rec": _recordio([_record(1, [7], [2], 6), _record(0, [1, 2], [0, 1], 6)])})
    ds = data.read_channel(root, data.RECORDIO_PROTOBUF)
    assert sp.issparse(ds.features) and ds.features.shape == (2, 6)
    assert ds.features.toarray().tolist() == [[0, 0, 7, 0, 0, 0], [1, 2, 0, 0, 0, 0]]
    (root / "sparse.rec").write_bytes(b"garbage!")
    assert "no RecordIO magic number at byte 0" in error_of(root, data.RECORDIO_PROTOBUF)


def test_recordio_written_by_the_sagemaker_sdk(tmp_path: Path) -> None:
    common = pytest.importorskip("sagemaker.amazon.common")
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    buffer = io.BytesIO()
    common.write_numpy_to_dense_tensor(buffer, x, np.array([0, 1, 0, 1], dtype=np.float32))
    ds = data.read_channel(channel(tmp_path, {"sdk.rec": buffer.getvalue()}), data.RECORDIO_PROTOBUF)
    assert ds.features.tolist() == x.tolist() and ds.labels.tolist() == [0, 1, 0, 1]


# ---------------------------------------------------------------- speed


@pytest.fixture(scope="module")
def adult_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    adult = next((path for path in ADULT_COPIES if path.exists()), None)
    if adult is None:
        pytest.skip("adult.data.gz not available")
    files = adult_prep.prepare(adult, tmp_path_factory.mktemp("adult"))
    return files["train"].parent


def test_adult_loads_in_well_under_a_second(adult_csv: Path) -> None:
    start = time.perf_counter()
    ds = data.read_channel(adult_csv, data.CSV)
    elapsed = time.perf_counter() - start
    assert ds.features.shape[0] == 20838 and ds.features.shape[1] > 100
    assert elapsed < 0.5, elapsed


def test_adult_as_libsvm_loads_quickly(adult_csv: Path, tmp_path: Path) -> None:
    dense = data.read_channel(adult_csv, data.CSV)
    matrix = sp.csr_matrix(np.nan_to_num(dense.features))
    root = channel(tmp_path, {})
    with (root / "adult.libsvm").open("w") as fh:
        for row in range(matrix.shape[0]):
            cells = slice(matrix.indptr[row], matrix.indptr[row + 1])
            pairs = " ".join(f"{j}:{v:.9g}" for j, v in zip(matrix.indices[cells], matrix.data[cells], strict=True))
            fh.write(f"{dense.labels[row]:g} {pairs}\n")
    began = time.perf_counter()
    ds = data.read_channel(root, data.LIBSVM)
    elapsed = time.perf_counter() - began
    assert (ds.features != matrix[:, : ds.n_features]).nnz == 0
    assert elapsed < 0.5, elapsed
