"""Validate parsed request parameters against an operation's input shape.

The constraints come from botocore's model (required, enum, min/max, pattern),
and violations are reported the way AWS's JSON and query services word them::

    1 validation error detected: Value null at 'trainingJobName' failed to
    satisfy constraint: Member must not be null
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from botocore.model import Shape

_STRING_TYPES = ("string", "character")
_NUMBER_TYPES = ("integer", "long", "short", "byte", "float", "double")


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    """AWS patterns are Java regexes; the few Python cannot compile are skipped."""
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:
        return None


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, dict | list):
        return "'" + json.dumps(value, default=str)[:200] + "'"
    if isinstance(value, bytes):
        return "'java.nio.HeapByteBuffer'"
    return f"'{value}'"


class _Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, value: Any, path: str, constraint: str) -> None:
        self.errors.append(
            f"Value {_render(value)} at '{path}' failed to satisfy constraint: {constraint}"
        )


def validate(shape: Shape | None, params: dict[str, Any]) -> list[str]:
    """Return the list of violations (empty when the request is valid)."""
    if shape is None:
        return []
    out = _Collector()
    _check_structure(shape, params, "", out)
    return out.errors


def format_errors(errors: list[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(errors)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


#: Per structure shape: (required (name, wire path name) pairs, members (name, shape, wire path name)).
_PLANS: dict[Shape, tuple[tuple[tuple[str, str], ...], dict[str, tuple[Shape, str]]]] = {}



def _plan(shape: Shape) -> tuple[tuple[tuple[str, str], ...], dict[str, tuple[Shape, str]]]:
    # Every request of an operation walks the same shapes: look their facts up once.
    plan = _PLANS.get(shape)
    if plan is None:
        required = tuple((name, _lower_camel(name)) for name in shape.metadata.get("required", []))
        members = {name: (member, _lower_camel(name)) for name, member in shape.members.items()}
        plan = _PLANS[shape] = (required, members)
    return plan


def _check_structure(shape: Shape, value: dict[str, Any], path: str, out: _Collector) -> None:
    required, members = _plan(shape)
    for name, wire in required:
        if value.get(name) is None:
            out.add(None, _join(path, wire), "Member must not be null")
    for name, (member, wire) in members.items():  # the model's order: errors are listed in it
        item = value.get(name)
        if item is not None:
            _check(member, item, _join(path, wire), out)


def _check(shape: Shape, value: Any, path: str, out: _Collector) -> None:
    kind = shape.type_name
    if kind == "structure":
        if isinstance(value, dict):
            _check_structure(shape, value, path, out)
        return
    if kind == "list":
        _check_size(shape, value, path, out)
        for index, item in enumerate(value, start=1):
            if item is not None:
                _check(shape.member, item, f"{path}.{index}.member", out)
        return
    if kind == "map":
        _check_size(shape, value, path, out)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.key", out)
            if item is not None:
                _check(shape.value, item, f"{path}.value", out)
        return
    if kind in _STRING_TYPES:
        _check_string(shape, value, path, out)
    elif kind in _NUMBER_TYPES:
        _check_number(shape, value, path, out)
    elif kind == "blob" and isinstance(value, bytes | bytearray):
        _check_size(shape, value, path, out)


def _check_size(shape: Shape, value: Any, path: str, out: _Collector) -> None:
    try:
        size = len(value)
    except TypeError:
        return
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        out.add(value, path, f"Member must have length greater than or equal to {low}")
    if high is not None and size > high:
        out.add(value, path, f"Member must have length less than or equal to {high}")


def _check_string(shape: Shape, value: Any, path: str, out: _Collector) -> None:
    if not isinstance(value, str):
        return
    enum = shape.enum
    if enum and value not in enum:
        out.add(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        return
    _check_size(shape, value, path, out)
    pattern = shape.metadata.get("pattern")
    if pattern:
        compiled = _compiled(pattern)
        # AWS matches the whole value (Java's String.matches), anchored or not.
        if compiled is not None and compiled.fullmatch(value) is None:
            out.add(value, path, f"Member must satisfy regular expression pattern: {pattern}")


def _check_number(shape: Shape, value: Any, path: str, out: _Collector) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        out.add(value, path, f"Member must have value greater than or equal to {low}")
    if high is not None and value > high:
        out.add(value, path, f"Member must have value less than or equal to {high}")
