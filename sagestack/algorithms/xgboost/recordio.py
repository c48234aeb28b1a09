"""SageMaker's ``application/x-recordio-protobuf``: the reader of training data and request bodies,
and the writer of responses (the one RecordIO module; the model server imports it from here).

A file is a sequence of RecordIO frames (dmlc framing: a magic number, a word
holding a continuation flag and the length, the payload padded to 4 bytes).
Each payload is a protobuf ``Record`` (the message the SageMaker SDK writes
with ``write_numpy_to_dense_tensor``/``write_spmatrix_to_sparse_tensor``):

    Record        { map<string, Value> features = 1; map<string, Value> label = 2; ... }
    Value         { oneof { Float32Tensor float32_tensor = 2; Float64Tensor float64_tensor = 3;
                            Int32Tensor int32_tensor = 7; ... } }
    *Tensor       { repeated <type> values = 1; repeated uint64 keys = 2; repeated uint64 shape = 3; }

The wire format is decoded and encoded by hand so that no protobuf runtime is
needed; tensor values are packed, so each record costs a few Python calls and
one ``np.frombuffer``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SparseRecords:
    """Rows as CSR pieces: one label and ``counts[i]`` (index, value) pairs per row."""

    labels: np.ndarray
    counts: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    #: Width the records declare (their tensor ``shape``); sparse rows may stop short of it.
    width: int = 0


_RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", _RECORDIO_MAGIC)


def _recordio_payloads(buf: bytes) -> Iterator[bytes]:
    """Record payloads of a RecordIO stream (dmlc framing: magic, flag+length, 4-byte padding)."""
    pos, size = 0, len(buf)
    pending: list[bytes] = []
    while pos < size:
        if size - pos < 8:
            raise ValueError(f"truncated record header at byte {pos}")
        magic, word = struct.unpack_from("<II", buf, pos)
        if magic != _RECORDIO_MAGIC:
            raise ValueError(f"no RecordIO magic number at byte {pos}")
        flag, length = word >> 29, word & ((1 << 29) - 1)
        start = pos + 8
        if start + length > size:
            raise ValueError(f"truncated record at byte {pos}")
        payload = buf[start : start + length]
        pos = start + ((length + 3) & ~3)
        if flag == 0:
            yield payload
        else:  # a record split where its bytes held the magic number: rejoin with it
            pending.append(payload)
            if flag == 3:
                yield _MAGIC_BYTES.join(pending)
                pending = []


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of a protobuf message; bytes for length-delimited."""
    pos, size = 0, len(buf)
    while pos < size:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def _signed32(values: list[int]) -> list[int]:
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


# Value.oneof field number -> (numpy dtype of packed values or None for varints)
_TENSOR_TYPES: dict[int, np.dtype | None] = {2: np.dtype("<f4"), 3: np.dtype("<f8"), 7: None}


def _tensor(value_msg: bytes) -> tuple[np.ndarray, list[int], list[int]]:
    """``(values, keys, shape)`` of a protobuf ``Value`` holding a tensor."""
    for number, _, body in _proto_fields(value_msg):
        if number not in _TENSOR_TYPES:
            continue
        dtype = _TENSOR_TYPES[number]
        chunks: list[np.ndarray] = []
        keys: list[int] = []
        shape: list[int] = []
        for field_no, wire, data in _proto_fields(body):
            if field_no == 1:
                chunks.append(_tensor_values(data, wire, dtype))
            elif field_no == 2:
                keys.extend(_packed_varints(data) if wire == 2 else [data])
            elif field_no == 3:
                shape.extend(_packed_varints(data) if wire == 2 else [data])
        values = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.float32)
        return values, keys, shape
    raise ValueError("a Record value holds no float32, float64 or int32 tensor")


def _tensor_values(data: int | bytes, wire: int, dtype: np.dtype | None) -> np.ndarray:
    if dtype is None:  # int32 values are varints
        ints = _packed_varints(data) if wire == 2 else [data]
        return np.asarray(_signed32(ints), dtype=np.float32)
    return np.frombuffer(data, dtype=dtype)


def _record_maps(payload: bytes) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The ``features`` and ``label`` maps of a ``Record`` (name -> serialized Value)."""
    maps: dict[int, dict[str, bytes]] = {1: {}, 2: {}}
    for number, _, entry in _proto_fields(payload):
        if number in maps:
            key, value = "", b""
            for field_no, _, data in _proto_fields(entry):
                if field_no == 1:
                    key = bytes(data).decode("utf-8")
                elif field_no == 2:
                    value = data
            maps[number][key] = value
    return maps[1], maps[2]


def _pick(entries: dict[str, bytes], what: str) -> bytes:
    if "values" in entries:
        return entries["values"]
    if len(entries) == 1:
        return next(iter(entries.values()))
    raise ValueError(f"record has no '{what}' tensor named 'values'")


def read_file(path: Path) -> SparseRecords:
    """Every record of one file; raises ValueError on a malformed stream."""
    labels: list[float] = []
    counts: list[int] = []
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    width = 0
    for payload in _recordio_payloads(path.read_bytes()):
        features, label = _record_maps(payload)
        label_values, _, _ = _tensor(_pick(label, "label"))
        if label_values.size == 0:
            raise ValueError(f"record {len(labels) + 1} has an empty label")
        feature_values, keys, shape = _tensor(_pick(features, "features"))
        if keys and len(keys) != feature_values.size:
            number = len(labels) + 1
            raise ValueError(f"record {number} has {len(keys)} keys for {feature_values.size} values")
        width = max(width, shape[0] if shape else feature_values.size)
        labels.append(float(label_values[0]))
        counts.append(feature_values.size)
        indices.append(np.asarray(keys, dtype=np.int64) if keys else np.arange(feature_values.size))
        values.append(feature_values.astype(np.float32))
    if not labels:
        empty = np.empty(0, dtype=np.float32)
        return SparseRecords(empty, np.empty(0, np.int64), np.empty(0, np.int32), empty)
    return SparseRecords(
        np.asarray(labels, dtype=np.float32),
        np.asarray(counts, dtype=np.int64),
        np.concatenate(indices).astype(np.int32),
        np.concatenate(values),
        width,
    )


def feature_tensors(buf: bytes) -> Iterator[tuple[np.ndarray, list[int], list[int]]]:
    """``(values, keys, shape)`` of each record's ``features`` tensor; labels are not read."""
    for payload in _recordio_payloads(buf):
        features, _ = _record_maps(payload)
        yield _tensor(_pick(features, "features"))


# ---------------------------------------------------------------- writer


def _key(number: int, wire: int) -> bytes:
    return bytes([(number << 3) | wire])


def _length_delimited(data: bytes) -> bytes:
    """``data`` preceded by its length as a varint."""
    out = bytearray()
    n = len(data)
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out) + data


def _frame(payload: bytes) -> bytes:
    header = struct.pack("<II", _RECORDIO_MAGIC, len(payload))
    return header + payload + b"\0" * (-len(payload) % 4)


def _float32_value(values: list[float]) -> bytes:
    """A ``Value`` holding a ``Float32Tensor`` of ``values`` (packed)."""
    tensor = _key(1, 2) + _length_delimited(np.asarray(values, dtype="<f4").tobytes())  # Float32Tensor.values
    return _key(2, 2) + _length_delimited(tensor)  # Value.float32_tensor


def encode_label_records(rows: list[Mapping[str, float | list[float]]]) -> bytes:
    """Each row a Record whose ``label`` map holds one float32 tensor per key (SageMaker's response layout)."""
    frames = []
    for row in rows:
        record = b""
        for key, value in row.items():
            value_msg = _float32_value(value if isinstance(value, list) else [value])
            entry = _key(1, 2) + _length_delimited(key.encode()) + _key(2, 2) + _length_delimited(value_msg)
            record += _key(2, 2) + _length_delimited(entry)  # Record.label map entry
        frames.append(_frame(record))
    return b"".join(frames)
