"""Record handling for batch transform: splitting, batching, JSONPath filters and joins.

Only the JSONPath forms SageMaker's docs use for DataProcessing are supported:
``$``, ``$[i]``, ``$[i:j]``, ``$[i,j,...]``, ``$.key``, ``$['key']`` and
chains of them (``$.features[1:]``). CSV records are filtered as lists of fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from sagestack.aws.errors import AwsError

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[\s*'([^']*)'\s*\]|\[([^\]]*)\]")


def _steps(path: str) -> list[tuple[str, Any]]:
    if not path.startswith("$"):
        raise AwsError("ValidationException", f"JSONPath {path!r} must start with $.", 400)
    steps: list[tuple[str, Any]] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise AwsError("ValidationException", f"Unsupported JSONPath {path!r}.", 400)
        key, quoted, index = match.groups()
        if key is not None or quoted is not None:
            steps.append(("key", key if key is not None else quoted))
        elif ":" in index:
            low, high = (int(p) if p.strip() else None for p in index.split(":", 1))
            steps.append(("slice", (low, high)))
        else:
            steps.append(("pick", [int(p) for p in index.split(",")]))
        position = match.end()
    return steps


def apply_path(path: str | None, value: Any) -> Any:
    if not path or path == "$":
        return value
    for kind, arg in _steps(path):
        if kind == "key":
            value = value[arg]
        elif kind == "slice":
            value = value[arg[0]:arg[1]]
        else:
            value = arg_pick(value, arg)
    return value


def arg_pick(value: Any, indices: list[int]) -> Any:
    return value[indices[0]] if len(indices) == 1 else [value[i] for i in indices]


def is_csv(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in ("text/csv", "text/x-csv")


def filter_record(record: bytes, path: str | None, content_type: str | None) -> bytes:
    """Apply InputFilter/OutputFilter to one record (a CSV line or a JSON document)."""
    if not path or path == "$":
        return record
    if is_csv(content_type):
        picked = apply_path(path, record.decode("utf-8").split(","))
        return ",".join(picked if isinstance(picked, list) else [picked]).encode()
    picked = apply_path(path, json.loads(record))
    return json.dumps(picked).encode()


def join_records(source: bytes, output: bytes, content_type: str | None) -> bytes:
    """JoinSource=Input: the input record followed by the model's output for it."""
    if is_csv(content_type):
        return source.rstrip(b"\r\n") + b"," + output.strip()
    document = json.loads(source)
    result = json.loads(output)
    if isinstance(document, dict):
        return json.dumps({**document, "SageMakerOutput": result}).encode()
    return json.dumps([*document, result] if isinstance(document, list) else [document, result]).encode()


def lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline) from a byte stream; blank lines are skipped."""
    pending = b""
    number = 0
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            if line.strip():
                yield number, line.rstrip(b"\r")
    if pending.strip():
        yield number + 1, pending.rstrip(b"\r")


def batches(records: Iterator[tuple[int, bytes]], max_bytes: int, multi: bool) -> Iterator[list[tuple[int, bytes]]]:
    """Group records into requests: one each (SingleRecord) or up to ``max_bytes`` (MultiRecord)."""
    batch: list[tuple[int, bytes]] = []
    size = 0
    for number, record in records:
        if batch and (not multi or size + len(record) + 1 > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append((number, record))
        size += len(record) + 1
    if batch:
        yield batch
