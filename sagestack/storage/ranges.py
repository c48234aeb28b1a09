"""Helpers for the HTTP layer: Range headers and conditional requests, with S3's rules."""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum

from sagestack.storage import errors

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COPY_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d+)$")

#: A requested range: (first, last) inclusive, (first, None) open-ended, (None, n) the last n bytes.
RangeSpec = tuple[int | None, int | None]


def parse_range_header(value: str | None) -> RangeSpec | None:
    """A single ``bytes=`` range, or None when absent or unusable.

    S3 ignores a Range it cannot parse (and multi-range requests) and serves the
    whole object with 200, so those come back as None rather than as an error.
    """
    if not value:
        return None
    m = _RANGE_RE.match(value.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(2)) if m.group(2) else None
    if first is not None and last is not None and last < first:
        return None
    return first, last


def format_range(spec: RangeSpec) -> str:
    first, last = spec
    return f"bytes={'' if first is None else first}-{'' if last is None else last}"


def resolve_range(spec: RangeSpec, size: int) -> tuple[int, int]:
    """Inclusive (first, last) within an object of ``size`` bytes; unsatisfiable -> InvalidRange (416)."""
    first, last = spec
    if first is not None and last is not None and last < first:
        raise errors.invalid_range(format_range(spec), size)
    if first is None:  # suffix: the last `last` bytes
        if not last or size == 0:
            raise errors.invalid_range(format_range(spec), size)
        return max(0, size - last), size - 1
    if first >= size:
        raise errors.invalid_range(format_range(spec), size)
    return first, size - 1 if last is None else min(last, size - 1)


def content_range(span: tuple[int, int], size: int) -> str:
    return f"bytes {span[0]}-{span[1]}/{size}"


def parse_copy_source_range(value: str, size: int) -> tuple[int, int]:
    """``x-amz-copy-source-range`` of UploadPartCopy: stricter than Range (InvalidArgument)."""
    m = _COPY_RANGE_RE.match(value.strip())
    if not m or int(m.group(2)) < int(m.group(1)):
        raise errors.bad_copy_source_range(value)
    first, last = int(m.group(1)), int(m.group(2))
    if last >= size:
        raise errors.copy_source_range_out_of_bounds(size)
    return first, last


# --- conditional requests --------------------------------------------------------------


class Condition(Enum):
    OK = 200
    NOT_MODIFIED = 304


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match value (a list, ``*``, quoted or not) names ``etag``."""
    bare = etag.strip('"')
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == bare:
            return True
    return False


def check_conditions(
    etag: str,
    last_modified: datetime,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: datetime | None = None,
    if_unmodified_since: datetime | None = None,
) -> Condition:
    """GetObject/HeadObject conditions: raises PreconditionFailed (412) or returns OK / NOT_MODIFIED.

    As S3 (and RFC 7232) does: a passing If-Match overrides a failing
    If-Unmodified-Since, and If-None-Match, when present, overrides If-Modified-Since.
    """
    if if_match is not None:
        if not etag_matches(if_match, etag):
            raise errors.precondition_failed("If-Match")
    elif if_unmodified_since is not None and last_modified > if_unmodified_since:
        raise errors.precondition_failed("If-Unmodified-Since")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag):
            return Condition.NOT_MODIFIED
    elif if_modified_since is not None and last_modified <= if_modified_since:
        return Condition.NOT_MODIFIED
    return Condition.OK


def check_copy_source_conditions(
    etag: str,
    last_modified: datetime,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: datetime | None = None,
    if_unmodified_since: datetime | None = None,
) -> None:
    """``x-amz-copy-source-if-*``: every failure is a 412, never a 304."""
    result = check_conditions(
        etag,
        last_modified,
        if_match=if_match,
        if_none_match=if_none_match,
        if_modified_since=if_modified_since,
        if_unmodified_since=if_unmodified_since,
    )
    if result is Condition.NOT_MODIFIED:
        raise errors.precondition_failed(
            "x-amz-copy-source-If-None-Match"
            if if_none_match is not None
            else "x-amz-copy-source-If-Modified-Since"
        )
