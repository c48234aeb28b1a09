"""Validate parsed request parameters against an operation's input shape.

The constraints come from botocore's model (required, enum, min/max, pattern),
and violations are reported the way AWS's JSON and query services word them::

    1 validation error detected: Value null at 'trainingJobName' failed to
    satisfy constraint: Member must not be null
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
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
    checker = _checker(shape)
    if checker is None:
        return []
    out = _Collector()
    checker(params, "", out)
    return out.errors


def format_errors(errors: list[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(errors)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


#: (value, path, collector) -> None; None stands for "nothing to check" (no constraint on the shape).
Checker = Callable[[Any, str, _Collector], None]
_CHECKERS: dict[Shape, Checker | None] = {}


def _checker(shape: Shape) -> Checker | None:
    # Every request of an operation walks the same shapes: their constraints are compiled into
    # closures once, and members without any constraint are skipped outright.
    if shape in _CHECKERS:
        return _CHECKERS[shape]
    kind = shape.type_name
    if kind == "structure":
        _CHECKERS[shape] = checker = _structure_checker(shape)  # stored first: shapes can be recursive
        return checker
    if kind == "list":
        checker = _list_checker(shape)
    elif kind == "map":
        checker = _map_checker(shape)
    elif kind in _STRING_TYPES:
        checker = _string_checker(shape)
    elif kind in _NUMBER_TYPES:
        checker = _number_checker(shape)
    elif kind == "blob":
        size = _size_checker(shape)
        checker = None if size is None else _only_for((bytes, bytearray), size)
    else:
        checker = None
    _CHECKERS[shape] = checker
    return checker


def _structure_checker(shape: Shape) -> Checker:
    required = tuple((name, _lower_camel(name)) for name in shape.metadata.get("required", []))
    members: tuple[tuple[str, str, Checker], ...] | None = None

    def check(value: Any, path: str, out: _Collector) -> None:
        nonlocal members
        if not isinstance(value, dict):
            return
        if members is None:  # resolved on first use, when every member shape can be compiled
            members = tuple(
                (name, _lower_camel(name), checker)
                for name, member in shape.members.items()
                if (checker := _checker(member)) is not None
            )
        for name, wire in required:
            if value.get(name) is None:
                out.add(None, _join(path, wire), "Member must not be null")
        for name, wire, checker in members:  # the model's order: errors are listed in it
            item = value.get(name)
            if item is not None:
                checker(item, _join(path, wire), out)

    return check


def _list_checker(shape: Shape) -> Checker | None:
    size = _size_checker(shape)
    item_checker = _checker(shape.member)
    if size is None and item_checker is None:
        return None

    def check(value: Any, path: str, out: _Collector) -> None:
        if size is not None:
            size(value, path, out)
        if item_checker is not None:
            for index, item in enumerate(value, start=1):
                if item is not None:
                    item_checker(item, f"{path}.{index}.member", out)

    return check


def _map_checker(shape: Shape) -> Checker | None:
    size = _size_checker(shape)
    key_checker, value_checker = _checker(shape.key), _checker(shape.value)
    if size is None and key_checker is None and value_checker is None:
        return None

    def check(value: Any, path: str, out: _Collector) -> None:
        if size is not None:
            size(value, path, out)
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            if key_checker is not None:
                key_checker(key, f"{path}.key", out)
            if item is not None and value_checker is not None:
                value_checker(item, f"{path}.value", out)

    return check


def _size_checker(shape: Shape) -> Checker | None:
    return _bounds_checker(shape, "length", _length)


def _number_checker(shape: Shape) -> Checker | None:
    return _bounds_checker(shape, "value", _number)


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _number(value: Any) -> int | float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _bounds_checker(shape: Shape, noun: str, measure: Callable[[Any], int | float | None]) -> Checker | None:
    """The model's min/max on ``measure(value)``; values it cannot measure (None) are not checked."""
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is None and high is None:
        return None

    def check(value: Any, path: str, out: _Collector) -> None:
        amount = measure(value)
        if amount is None:
            return
        if low is not None and amount < low:
            out.add(value, path, f"Member must have {noun} greater than or equal to {low}")
        if high is not None and amount > high:
            out.add(value, path, f"Member must have {noun} less than or equal to {high}")

    return check


def _only_for(types: tuple[type, ...], checker: Checker) -> Checker:
    def check(value: Any, path: str, out: _Collector) -> None:
        if isinstance(value, types):
            checker(value, path, out)

    return check


def _string_checker(shape: Shape) -> Checker | None:
    enum = shape.enum
    size = _size_checker(shape)
    pattern = shape.metadata.get("pattern")
    compiled = _compiled(pattern) if pattern else None
    if not enum and size is None and compiled is None:
        return None
    allowed = frozenset(enum) if enum else None

    def check(value: Any, path: str, out: _Collector) -> None:
        if not isinstance(value, str):
            return
        if allowed is not None and value not in allowed:
            out.add(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
            return
        if size is not None:
            size(value, path, out)
        # AWS matches the whole value (Java's String.matches), anchored or not.
        if compiled is not None and compiled.fullmatch(value) is None:
            out.add(value, path, f"Member must satisfy regular expression pattern: {pattern}")

    return check
