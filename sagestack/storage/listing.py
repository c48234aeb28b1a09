"""Ordered scans with S3's prefix / delimiter / marker semantics over a byte-ordered index.

Entries come out in UTF-8 byte order. With a delimiter, every key whose
remainder after ``prefix`` contains the delimiter rolls up into one common
prefix, and the scan then *seeks* past that common prefix with a single index
lookup instead of walking every key below it. A listing of 1000 "directories"
each holding a million keys therefore costs about 1000 seeks, not 10^9 rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol


class KeyedRow(Protocol):
    key: bytes


#: fetch(lower, inclusive, upper, limit): rows with lower < key (or <=) and key < upper, ascending.
Fetch = Callable[[bytes, bool, bytes | None, int], Sequence[Any]]

#: Smallest batch: with a delimiter, enough to see one key of a common prefix and the
#: next one (if that is inside it too, the rest of the prefix is skipped by a seek).
_MIN_BATCH = 2


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def common_prefix(key: bytes, prefix: bytes, delimiter: bytes | None) -> bytes | None:
    """The common prefix ``key`` rolls up into, or None when it is listed as itself."""
    if not delimiter:
        return None
    i = key.find(delimiter, len(prefix))
    return None if i < 0 else key[: i + len(delimiter)]


def iter_entries(
    fetch: Fetch,
    prefix: bytes,
    delimiter: bytes | None,
    marker: bytes | None,
    max_batch: int,
) -> Iterator[tuple[bytes, Any | None]]:
    """Yield ``(key, row)`` for listed keys and ``(common_prefix, None)`` for rolled-up ones.

    Everything yielded sorts strictly after ``marker``, including common
    prefixes: a page that ended on ``photos/`` continues after all of ``photos/...``.
    """
    upper = prefix_end(prefix) if prefix else None
    if marker is not None and marker >= prefix:
        lower, inclusive = marker, False
    else:
        lower, inclusive = prefix, True
    # Batches adapt: one that ended inside a common prefix read rows for nothing, so the
    # next is halved (down to a row or two per seek over big "directories"); one that was
    # all useful doubles again (up to ``max_batch`` over flat listings).
    size = max_batch if not delimiter else min(max_batch, 64)
    while True:
        rows = fetch(lower, inclusive, upper, size)
        inside: bytes | None = None  # the common prefix the scan is currently in
        for row in rows:
            key: bytes = row.key
            if inside is not None:
                if key.startswith(inside):
                    continue
                inside = None
            cp = common_prefix(key, prefix, delimiter)
            if cp is None:
                yield key, row
            else:
                if marker is None or cp > marker:
                    yield cp, None
                inside = cp
            lower, inclusive = key, False
        if len(rows) < size:
            return
        if inside is None:
            size = min(max_batch, size * 2)
            continue
        # The batch ended inside a common prefix: one seek skips all of its keys.
        size = max(_MIN_BATCH, size // 2)
        seek = prefix_end(inside)
        if seek is None or (upper is not None and seek >= upper):
            return
        lower, inclusive = seek, True
