"""The format readers: CSV, libsvm, Parquet and RecordIO-protobuf files into one :class:`DataSet`.

Readers parse with C code (pandas, numpy), never a Python loop per line, and
keep one copy of the data (CSV files are first scanned for their line count
so that all of them are parsed into a single preallocated array). Only when a
file turns out to be malformed is it rescanned line by line in Python, to name
the offending line in the error.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sagestack.algorithms.errors import UserError
from sagestack.algorithms.xgboost import recordio
from sagestack.algorithms.xgboost.dataset import (
    CSV,
    LIBSVM,
    PARQUET,
    RECORDIO_PROTOBUF,
    DataSet,
    Part,
    check_finite,
    display_name,
    format_error,
    load_error,
)

log = logging.getLogger(__name__)

#: Bytes of a libsvm file parsed at once; bounds the parser's temporary arrays.
LIBSVM_CHUNK_BYTES = 16 << 20


# ---------------------------------------------------------------- csv

# What pandas reads as missing; a line holding only these is not malformed.
_NA_STRINGS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)


def sniff_delimiter(files: list[Path]) -> str:
    """The delimiter of the first non-blank line of the files, as SageMaker determines it."""
    first = next((line for path in files for line in _lines(path) if line.strip()), "")
    try:
        delimiter = csv.Sniffer().sniff(first, delimiters=",;\t| ").delimiter
    except csv.Error as exc:
        # One column (a label and no feature) has no delimiter to find, nor has no data.
        if any(c in first for c in ",;\t| "):
            raise UserError(f"Could not determine delimiter on line {first[:50]}:\n{exc}") from exc
        delimiter = ","
    log.info("Determined delimiter of CSV input is '%s'", delimiter)
    return delimiter


def _lines(path: Path) -> Iterator[str]:
    with path.open("r", errors="ignore") as fh:
        yield from fh


def _csv_error(path: Path, root: Path, delimiter: str, exc: BaseException) -> UserError:
    """Find the line pandas could not parse (slow, error path only)."""
    width = None
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split() if delimiter == " " else line.rstrip("\r\n").split(delimiter)
        width = width or len(fields)
        problem = _csv_line_problem(fields, width)
        if problem:
            return format_error(CSV, path, root, number, line, problem)
    return load_error(CSV, path, root, exc)


def _csv_line_problem(fields: list[str], width: int) -> str | None:
    if len(fields) > width:
        return f"expected {width} fields, saw {len(fields)}"
    for position, raw in enumerate(fields, start=1):
        value = raw.strip().strip('"')
        if value in _NA_STRINGS:
            continue
        try:
            float(value)
        except ValueError:
            return f"column {position} value '{value[:20]}' is not a number"
    return None


#: Rows pandas parses at a time; each chunk is copied straight into the result.
CSV_CHUNK_ROWS = 1 << 16


def _count_lines(path: Path) -> int:
    """Newlines in a file (+1 for an unterminated last line): an upper bound on its rows."""
    count, last = 0, b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 24):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class _CsvTable:
    """All rows of a channel in one preallocated float32 array.

    Counting lines first lets every pandas chunk be copied into its final
    place, so a channel costs one copy of its data plus one chunk, however
    many files it has.
    """

    def __init__(self, files: list[Path], root: Path, delimiter: str) -> None:
        self.root = root
        self.sep = r"\s+" if delimiter == " " else delimiter
        self.delimiter = delimiter
        self.capacity = sum(_count_lines(f) for f in files)
        self.array: np.ndarray | None = None
        self.rows = 0
        self.parts: list[Part] = []

    def read(self, path: Path) -> None:
        start = self.rows
        try:
            reader = pd.read_csv(
                path, header=None, sep=self.sep, dtype=np.float32, engine="c", chunksize=CSV_CHUNK_ROWS
            )
            with reader:
                for chunk in reader:
                    self._append(path, chunk.to_numpy(dtype=np.float32, copy=False))
        except pd.errors.EmptyDataError:
            return
        except (ValueError, pd.errors.ParserError) as exc:
            raise _csv_error(path, self.root, self.delimiter, exc) from None
        if self.rows > start:
            self.parts.append(Part(path, start, self.rows - start))

    def _append(self, path: Path, block: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty((self.capacity, block.shape[1]), dtype=np.float32)
        elif block.shape[1] != self.array.shape[1]:
            first = display_name(self.parts[0].path, self.root) if self.parts else "the first file"
            raise UserError(
                f"Failed to load csv data with exception:\nfile '{display_name(path, self.root)}' has "
                f"{block.shape[1]} columns but file '{first}' has {self.array.shape[1]}; "
                "all files of a channel must have the same columns."
            )
        self.array[self.rows : self.rows + block.shape[0]] = block
        self.rows += block.shape[0]


def _read_csv(files: list[Path], root: Path, csv_weights: bool) -> DataSet | None:
    table = _CsvTable(files, root, sniff_delimiter(files))
    for path in files:
        table.read(path)
    if table.array is None or table.rows == 0:
        return None
    array = table.array[: table.rows]
    first_feature = 2 if csv_weights else 1
    if array.shape[1] < first_feature:
        what = "a label and a weight column" if csv_weights else "a label column"
        raise UserError(
            f"CSV data in '{root.name}' has {array.shape[1]} column(s); expected at least {what}."
        )
    labels = np.ascontiguousarray(array[:, 0])
    weights = np.ascontiguousarray(array[:, 1]) if csv_weights else None
    # Features stay a strided view of the table: xgboost reads strided arrays without a copy.
    data = DataSet(array[:, first_feature:], labels, weights, parts=table.parts, fmt=CSV, root=root)
    check_finite(data, data.weights, "instance weight")
    return data


# ---------------------------------------------------------------- libsvm

_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
# One number per line is the layout pandas' C parser reads fastest (4x np.fromstring).
_SEPARATORS_TO_NEWLINE = bytes.maketrans(b": \t\r\x0b\x0c", b"\n" * 6)
_MAX_INDEX = 2**31 - 2


@dataclass
class _SparseRows:
    labels: np.ndarray
    weights: np.ndarray | None
    qid: np.ndarray | None
    counts: np.ndarray  # features per row
    indices: np.ndarray
    values: np.ndarray
    width: int = 0  # declared number of features, when the format has one


def _chunks(path: Path, size: int) -> Iterator[tuple[bytes, int]]:
    """``(bytes, number of the chunk's first line)`` pieces of a file, cut after a newline."""
    line = 1
    rest = b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(size)
            if not block:
                if rest.strip():
                    yield rest + b"\n", line
                return
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            chunk, rest = data[: cut + 1], data[cut + 1 :]
            yield chunk, line
            line += chunk.count(b"\n")


class _LibsvmChunk:
    """Vectorised parse of whole lines of libsvm text.

    Tokens are found with numpy masks over the bytes; colons and blanks are
    turned into newlines so that one pandas call converts every number. Knowing
    which token holds a colon (and which is a ``qid:``), the flat number
    array is cut back into labels, weights, groups and (index, value) pairs.
    """

    def __init__(self, buf: bytes, fail: Callable[[int, str], UserError]) -> None:
        self.buf = buf
        self.fail = fail  # (line offset in chunk, detail) -> error
        a = np.frombuffer(buf, dtype=np.uint8)
        ws = _WHITESPACE[a]
        starts_mask = ~ws
        starts_mask[1:] &= ws[:-1]
        self.starts = np.flatnonzero(starts_mask)
        self.tok_line = np.searchsorted(np.flatnonzero(a == 10), self.starts)
        self.colon_pos = np.flatnonzero(a == 58)

    def parse(self) -> _SparseRows:
        n_tok = self.starts.size
        first = np.ones(n_tok, dtype=bool)
        first[1:] = self.tok_line[1:] != self.tok_line[:-1]
        has_colon = self._colon_tokens(n_tok)
        is_qid, qid_pos = self._qid_tokens(n_tok)
        self._check_structure(first, has_colon, is_qid)
        per_token = np.where(first, 1 + has_colon, np.where(is_qid, 1, 2))
        flat = self._numbers(qid_pos, int(per_token.sum()))
        offset = np.cumsum(per_token) - per_token
        return self._assemble(flat, offset, first, has_colon, is_qid)

    def _colon_tokens(self, n_tok: int) -> np.ndarray:
        owner = np.searchsorted(self.starts, self.colon_pos, side="right") - 1
        repeated = np.flatnonzero(owner[1:] == owner[:-1])
        if repeated.size:
            raise self.fail(int(self.tok_line[owner[repeated[0]]]), "a token has more than one ':'")
        has_colon = np.zeros(n_tok, dtype=bool)
        has_colon[owner] = True
        return has_colon

    def _qid_tokens(self, n_tok: int) -> tuple[np.ndarray, np.ndarray]:
        is_qid = np.zeros(n_tok, dtype=bool)
        if b"qid:" not in self.buf:
            return is_qid, np.empty(0, dtype=np.int64)
        a = np.frombuffer(self.buf, dtype=np.uint8)
        q = np.flatnonzero(a[:-3] == ord("q"))
        q = q[(a[q + 1] == ord("i")) & (a[q + 2] == ord("d")) & (a[q + 3] == ord(":"))]
        token = np.searchsorted(self.starts, q)
        inside = (token >= n_tok) | (self.starts[np.minimum(token, n_tok - 1)] != q)
        if inside.any():
            line = int(self.tok_line[np.searchsorted(self.starts, q[inside][0], side="right") - 1])
            raise self.fail(line, "'qid:' inside a token")
        is_qid[token] = True
        return is_qid, q

    def _check_structure(self, first: np.ndarray, has_colon: np.ndarray, is_qid: np.ndarray) -> None:
        second = np.zeros_like(first)
        second[1:] = first[:-1] & ~first[1:]
        bad_qid = is_qid & ~second
        if bad_qid.any():
            raise self.fail(self._line_of(bad_qid), "'qid:<id>' must directly follow the label")
        bare = ~first & ~is_qid & ~has_colon
        if bare.any():
            raise self.fail(self._line_of(bare), "a feature is not written as <index>:<value>")

    def _line_of(self, mask: np.ndarray) -> int:
        return int(self.tok_line[np.flatnonzero(mask)[0]])

    def _numbers(self, qid_pos: np.ndarray, expected: int) -> np.ndarray:
        """Every number of the chunk, in order, parsed by pandas' C reader as one column."""
        text = self.buf
        if qid_pos.size:
            mutable = np.frombuffer(bytearray(text), dtype=np.uint8)
            mutable[(qid_pos[:, None] + np.arange(3)).ravel()] = 32
            text = mutable.tobytes()
        text = text.translate(_SEPARATORS_TO_NEWLINE)
        try:
            column = pd.read_csv(
                io.BytesIO(text), header=None, dtype=np.float64, engine="c", quoting=csv.QUOTE_NONE
            ).to_numpy()
        except (ValueError, pd.errors.ParserError):
            column = None
        if column is None or column.shape[1:] != (1,) or column.shape[0] != expected:
            raise self.fail(-1, "a value is not a number")
        return column.ravel()

    def _assemble(
        self,
        flat: np.ndarray,
        offset: np.ndarray,
        first: np.ndarray,
        has_colon: np.ndarray,
        is_qid: np.ndarray,
    ) -> _SparseRows:
        row_start = offset[first]
        labels = flat[row_start].astype(np.float32)
        weighted = has_colon[first]
        weights = None
        if weighted.any():
            after_label = flat[np.minimum(row_start + 1, flat.size - 1)]
            weights = np.where(weighted, after_label, 1.0).astype(np.float32)
        qid = None
        if is_qid.any():
            if int(is_qid.sum()) != labels.size:
                no_qid = first & ~np.roll(is_qid, -1)
                raise self.fail(self._line_of(no_qid), "some lines have 'qid:' and some not")
            qid = flat[offset[is_qid]].astype(np.int64)
        feature = ~first & ~is_qid
        index = flat[offset[feature]]
        bad = (index < 0) | (index > _MAX_INDEX) | (index != np.floor(index))
        if bad.any():
            where = self._line_of(_scatter(feature, bad))
            raise self.fail(where, "feature index is not an integer >= 0")
        row_of_token = np.cumsum(first) - 1
        counts = np.bincount(row_of_token[feature], minlength=labels.size)
        return _SparseRows(
            labels, weights, qid, counts, index.astype(np.int32), flat[offset[feature] + 1].astype(np.float32)
        )


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A full-length boolean array holding ``values`` at the positions where ``mask`` is set."""
    out = np.zeros_like(mask)
    out[np.flatnonzero(mask)] = values
    return out


def _libsvm_line_problem(line: str) -> str | None:
    """What is wrong with one libsvm line (slow path for error messages)."""
    tokens = line.split()
    if not tokens:
        return None
    head = tokens[0].split(":")
    if len(head) > 2 or not all(_is_number(x) for x in head):
        return f"label '{tokens[0][:20]}' is not <label> or <label>:<weight>"
    body = tokens[2:] if len(tokens) > 1 and tokens[1].startswith("qid:") else tokens[1:]
    for token in body:
        index, colon, value = token.partition(":")
        if not colon or ":" in value or not _is_number(value):
            return f"'{token[:20]}' is not <index>:<value>"
        if not index.isdigit():
            return f"feature index in '{token[:20]}' is not an integer >= 0"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_libsvm_file(path: Path, root: Path) -> list[_SparseRows]:
    pieces = []
    for chunk, first_line in _chunks(path, LIBSVM_CHUNK_BYTES):

        def fail(offset: int, detail: str, chunk: bytes = chunk, first_line: int = first_line) -> UserError:
            return _libsvm_error(path, root, chunk, first_line, offset, detail)

        pieces.append(_LibsvmChunk(chunk, fail).parse())
    return pieces


def _libsvm_error(
    path: Path, root: Path, chunk: bytes, first_line: int, offset: int, detail: str
) -> UserError:
    lines = chunk.decode("utf-8", errors="replace").split("\n")
    if offset < 0:  # the vectorised pass only knows that some number was bad: find it
        offset = next((i for i, line in enumerate(lines) if _libsvm_line_problem(line)), 0)
        detail = _libsvm_line_problem(lines[offset]) or detail
    return format_error(LIBSVM, path, root, first_line + offset, lines[offset], detail)


def _read_libsvm(files: list[Path], root: Path, csv_weights: bool) -> DataSet | None:
    pieces: list[_SparseRows] = []
    parts: list[Part] = []
    rows = 0
    for path in files:
        file_pieces = [p for p in _parse_libsvm_file(path, root) if p.labels.size]
        n = sum(p.labels.size for p in file_pieces)
        if n:
            parts.append(Part(path, rows, n))
            rows += n
            pieces.extend(file_pieces)
    if not pieces:
        return None
    return _sparse_data_set(pieces, parts, root)


def _sparse_data_set(pieces: list[_SparseRows], parts: list[Part], root: Path) -> DataSet:
    if len({p.qid is None for p in pieces}) > 1:
        raise UserError(f"Failed to load libsvm data with exception:\nsome files in '{root.name}' have "
                        "'qid:' and some do not.")
    indices = np.concatenate([p.indices for p in pieces])
    n_features = max([int(indices.max()) + 1 if indices.size else 0] + [p.width for p in pieces])
    counts = np.concatenate([p.counts for p in pieces])
    rows = int(counts.size)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    matrix = sp.csr_matrix(
        (np.concatenate([p.values for p in pieces]), indices, indptr), shape=(rows, n_features)
    )
    labels = np.concatenate([p.labels for p in pieces])
    weights = None
    if any(p.weights is not None for p in pieces):
        weights = np.concatenate(
            [p.weights if p.weights is not None else np.ones_like(p.labels) for p in pieces]
        )
    qid = np.concatenate([p.qid for p in pieces]) if pieces[0].qid is not None else None
    data = DataSet(matrix, labels, weights, qid, parts=parts, fmt=LIBSVM, root=root)
    check_finite(data, data.weights, "instance weight")
    return data


# ---------------------------------------------------------------- parquet


def _read_parquet(files: list[Path], root: Path, csv_weights: bool) -> DataSet | None:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError("Parquet input needs the pyarrow package, which this server lacks.") from exc
    arrays: list[np.ndarray] = []
    parts: list[Part] = []
    rows = 0
    for path in files:
        try:
            array = pq.read_table(path).to_pandas().to_numpy(dtype=np.float32)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise load_error(PARQUET, path, root, exc) from None
        if array.shape[0]:
            arrays.append(array)
            parts.append(Part(path, rows, array.shape[0]))
            rows += array.shape[0]
    if not arrays:
        return None
    table = arrays[0] if len(arrays) == 1 else _concat_same_width(arrays, parts, root, PARQUET)
    return DataSet(table[:, 1:], np.ascontiguousarray(table[:, 0]), parts=parts, fmt=PARQUET, root=root)


def _concat_same_width(arrays: list[np.ndarray], parts: list[Part], root: Path, fmt: str) -> np.ndarray:
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise UserError(
            f"Failed to load {fmt} data with exception:\nfiles in '{root.name}' have different numbers "
            f"of columns: {sorted(widths)}"
        )
    return np.concatenate(arrays)


# ---------------------------------------------------------------- recordio-protobuf

def _read_recordio(files: list[Path], root: Path, csv_weights: bool) -> DataSet | None:
    pieces: list[_SparseRows] = []
    parts: list[Part] = []
    rows = 0
    for path in files:
        try:
            records = recordio.read_file(path)
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise load_error(RECORDIO_PROTOBUF, path, root, exc) from None
        piece = _SparseRows(
            records.labels, None, None, records.counts, records.indices, records.values, records.width
        )
        if piece.labels.size:
            pieces.append(piece)
            parts.append(Part(path, rows, piece.labels.size))
            rows += piece.labels.size
    if not pieces:
        return None
    data = _sparse_data_set(pieces, parts, root)
    data.fmt = RECORDIO_PROTOBUF
    return _densify_if_full(data)


def _densify_if_full(data: DataSet) -> DataSet:
    """Dense records come back as a dense matrix, like SageMaker's reader gives them."""
    f = data.features
    if f.nnz == f.shape[0] * f.shape[1]:
        data.features = f.toarray()
    return data


#: Format name -> reader of a channel's files (None when they hold no rows).
READERS: dict[str, Callable[[list[Path], Path, bool], DataSet | None]] = {
    CSV: _read_csv,
    LIBSVM: _read_libsvm,
    PARQUET: _read_parquet,
    RECORDIO_PROTOBUF: _read_recordio,
}
