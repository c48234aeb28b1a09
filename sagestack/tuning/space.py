"""ParameterRanges -> a validated search space, and values <-> the strings jobs receive.

SageMaker passes every hyperparameter as a string: integers as ``"5"``, continuous
values as Python-``repr``-like floats (``"0.2933271735090289"``), categorical values
verbatim. Parsing those strings back gives exactly the sampled value, which is what
lets a tuner be rebuilt from persisted trials.

Scaling (``ScalingType``): ``Linear`` and ``Auto`` sample uniformly (SageMaker's
``Auto`` "initially assumes linear scaling"); ``Logarithmic`` samples uniformly in
log space and needs ``MinValue > 0``; ``ReverseLogarithmic`` samples ``1 - x`` in log
space, needs ``0 <= MinValue`` and ``MaxValue < 1``, and exists for continuous
ranges only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Service limits (API model and the AMT quotas page).
MAX_RANGES = 30
MAX_CATEGORICAL_VALUES = 30
MAX_HYPERPARAMETERS = 100

INTEGER, CONTINUOUS, CATEGORICAL = "Integer", "Continuous", "Categorical"
SCALING_TYPES = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")

Value = int | float | str


class TuningValidationError(ValueError):
    """A request the service would reject; ``messages`` lists every problem found.

    The API layer should answer ``ValidationException`` with the first message, the
    way SageMaker reports one problem at a time.
    """

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = list(messages)
        super().__init__(self.messages[0] if self.messages else "Invalid tuning job configuration.")


@dataclass(frozen=True)
class ParameterSpec:
    """One tunable hyperparameter."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"
    values: tuple[str, ...] = ()

    # -- strings in and out -------------------------------------------------------------

    def format(self, value: Value) -> str:
        if self.kind == INTEGER:
            return str(int(value))
        if self.kind == CONTINUOUS:
            return repr(float(value))
        return str(value)

    def parse(self, text: str) -> Value | None:
        """The value a job was given, or None when ``text`` is not a point of this range."""
        try:
            if self.kind == CATEGORICAL:
                return text if text in self.values else None
            value: Value = int(text) if self.kind == INTEGER else float(text)
        except (TypeError, ValueError):
            return None
        return value if self.low <= value <= self.high else None

    # -- sampling ----------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> Value:
        if self.kind == CATEGORICAL:
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == INTEGER:
            return self._sample_integer(rng)
        return self._sample_continuous(rng)

    def _sample_integer(self, rng: np.random.Generator) -> int:
        low, high = int(self.low), int(self.high)
        if self.scaling != "Logarithmic":
            return int(rng.integers(low, high + 1))
        # Log-uniform over [low, high + 1) then floor, so every integer keeps a share.
        drawn = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
        return min(high, max(low, math.floor(drawn)))

    def _sample_continuous(self, rng: np.random.Generator) -> float:
        if self.scaling == "Logarithmic":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        elif self.scaling == "ReverseLogarithmic":
            value = 1.0 - math.exp(rng.uniform(math.log(1.0 - self.high), math.log(1.0 - self.low)))
        else:
            value = rng.uniform(self.low, self.high)
        return min(self.high, max(self.low, value))

    @property
    def log_scaled(self) -> bool:
        return self.scaling in ("Logarithmic", "ReverseLogarithmic")


@dataclass(frozen=True)
class SearchSpace:
    """The tunable hyperparameters in declaration order (integer, continuous, categorical)."""

    params: tuple[ParameterSpec, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __iter__(self) -> Iterator[ParameterSpec]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def format(self, point: Mapping[str, Value]) -> dict[str, str]:
        return {p.name: p.format(point[p.name]) for p in self.params}

    def parse(self, hyperparameters: Mapping[str, str]) -> dict[str, Value] | None:
        """The point a job was given, or None if any tuned value is missing or out of range."""
        point: dict[str, Value] = {}
        for spec in self.params:
            value = spec.parse(hyperparameters[spec.name]) if spec.name in hyperparameters else None
            if value is None:
                return None
            point[spec.name] = value
        return point

    def sample(self, rng: np.random.Generator) -> dict[str, Value]:
        return {p.name: p.sample(rng) for p in self.params}

    @property
    def categorical_only(self) -> bool:
        return all(p.kind == CATEGORICAL for p in self.params)

    def grid_size(self) -> int:
        return math.prod(len(p.values) for p in self.params) if self.params else 0

    def grid(self) -> Iterator[dict[str, Value]]:
        """Every combination of categorical values, first parameter varying slowest."""
        names = self.names
        for combo in itertools.product(*(p.values for p in self.params)):
            yield dict(zip(names, combo, strict=True))


# -- parsing and validation -------------------------------------------------------------


def _number(text: Any, integer: bool) -> float | int | None:
    try:
        return int(str(text).strip()) if integer else float(str(text).strip())
    except ValueError:
        return None


def _numeric_spec(kind: str, entry: Mapping[str, Any], errors: list[str]) -> ParameterSpec | None:
    name = str(entry.get("Name", ""))
    integer = kind == INTEGER
    low, high = _number(entry.get("MinValue"), integer), _number(entry.get("MaxValue"), integer)
    scaling = str(entry.get("ScalingType") or "Auto")
    what = "an integer" if integer else "a number"
    problems = [
        f"The {field} '{entry.get(field)}' of hyperparameter '{name}' is not {what}."
        for field, value in (("MinValue", low), ("MaxValue", high))
        if value is None or (not integer and not math.isfinite(value))
    ]
    if scaling not in SCALING_TYPES:
        problems.append(f"The ScalingType '{scaling}' of hyperparameter '{name}' is not one of "
                        f"{', '.join(SCALING_TYPES)}.")
    if problems:
        errors.extend(problems)
        return None
    assert low is not None and high is not None
    errors.extend(_range_problems(name, kind, float(low), float(high), scaling))
    return ParameterSpec(name, kind, float(low), float(high), "Linear" if scaling == "Auto" else scaling)


def _range_problems(name: str, kind: str, low: float, high: float, scaling: str) -> list[str]:
    lo, hi = _shown(low, kind), _shown(high, kind)
    if low > high:
        return [f"The MinValue '{lo}' of hyperparameter '{name}' is greater than its MaxValue '{hi}'."]
    if scaling == "Logarithmic" and low <= 0:
        return [f"Hyperparameter '{name}' uses Logarithmic scaling, which works only for ranges of "
                f"values greater than 0, but its MinValue is '{lo}'."]
    if scaling == "ReverseLogarithmic" and kind == INTEGER:
        return [f"ReverseLogarithmic scaling is supported only for continuous hyperparameters, "
                f"not for the integer hyperparameter '{name}'."]
    if scaling == "ReverseLogarithmic" and not (low >= 0 and high < 1):
        return [f"Hyperparameter '{name}' uses ReverseLogarithmic scaling, which works only for "
                f"ranges entirely within 0 <= x < 1.0, but its range is [{lo}, {hi}]."]
    return []


def _shown(value: float, kind: str) -> str:
    return str(int(value)) if kind == INTEGER else repr(value)


def _categorical_spec(entry: Mapping[str, Any], errors: list[str]) -> ParameterSpec | None:
    name = str(entry.get("Name", ""))
    values = [str(v) for v in entry.get("Values") or ()]
    if not values:
        errors.append(f"The categorical hyperparameter '{name}' must list at least one value.")
        return None
    if len(values) > MAX_CATEGORICAL_VALUES:
        errors.append(f"The categorical hyperparameter '{name}' lists {len(values)} values; "
                      f"at most {MAX_CATEGORICAL_VALUES} are allowed.")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        errors.append(f"The categorical hyperparameter '{name}' lists the value "
                      f"'{duplicates[0]}' more than once.")
    return ParameterSpec(name, CATEGORICAL, values=tuple(dict.fromkeys(values)))


def parse_ranges(ranges: Mapping[str, Any] | None) -> tuple[SearchSpace, list[str]]:
    """Build the search space from a ``ParameterRanges`` structure; also return every problem."""
    ranges = ranges or {}
    errors: list[str] = []
    specs: list[ParameterSpec] = []
    if ranges.get("AutoParameters"):
        errors.append("AutoParameters (Autotune) is not supported; list explicit ParameterRanges instead.")
    for key, kind in (("IntegerParameterRanges", INTEGER), ("ContinuousParameterRanges", CONTINUOUS)):
        for entry in ranges.get(key) or ():
            spec = _numeric_spec(kind, entry, errors)
            if spec is not None:
                specs.append(spec)
    for entry in ranges.get("CategoricalParameterRanges") or ():
        spec = _categorical_spec(entry, errors)
        if spec is not None:
            specs.append(spec)
    errors.extend(_collection_problems(ranges, specs))
    return SearchSpace(tuple(specs)), errors


def _collection_problems(ranges: Mapping[str, Any], specs: Sequence[ParameterSpec]) -> list[str]:
    total = sum(len(ranges.get(key) or ()) for key in
                ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges"))
    problems: list[str] = []
    if total == 0 and not ranges.get("AutoParameters"):
        problems.append("ParameterRanges must specify at least one hyperparameter range to tune.")
    if total > MAX_RANGES:
        # The per-list maximum also caps the sum over all lists (API model note).
        problems.append(f"ParameterRanges specifies {total} hyperparameters to tune; "
                        f"at most {MAX_RANGES} are allowed.")
    names = [s.name for s in specs]
    problems += [f"The hyperparameter '{n}' appears more than once in ParameterRanges."
                 for n in sorted({n for n in names if names.count(n) > 1})]
    return problems
