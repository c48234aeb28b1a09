"""The action tables: for every operation, the IAM checks AWS makes, compiled for the request path.

The tables are data, one JSON file per service in ``actions/`` (generated from AWS's Service
Authorization Reference by ``tools/gen_action_tables.py``). An operation lists its checks, all of
which must pass; each names an action, resource ARN templates filled from the request
(``${TrainingJobName}``, ``${Delete.Objects[].Key}``, ``${CopySource|copy_source}``), the request
members that carry its condition keys, and whether the resource's tags take part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from itertools import product
from typing import Any
from urllib.parse import unquote

#: Values the authorizer fills itself; every other placeholder is a request path.
PARTITION, REGION, ACCOUNT = "Partition", "Region", "Account"
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
#: Condition keys whose request member holds tags (a list of {Key, Value}, a map, or "k=v&k2=v2").
REQUEST_TAG_KEY = "aws:requesttag/${tagkey}"
TAG_KEYS_KEY = "aws:tagkeys"

#: ``filter(value, lookups)``: the part of a request value an ARN needs.
Lookups = Mapping[str, Callable[[str], str]]


def _copy_source(value: str, _lookups: Lookups) -> str:
    """S3's CopySource, ``[/]bucket/key[?versionId=v]`` (URL-encoded), as ``bucket/key``."""
    return unquote(value.split("?", 1)[0]).lstrip("/")


def _arn_name(value: str, _lookups: Lookups) -> str:
    return re.split(r"[:/]", value)[-1]


def _lookup(kind: str) -> Callable[[str, Lookups], str]:
    def resolve(value: str, lookups: Lookups) -> str:
        return lookups[kind](value) if kind in lookups else value
    return resolve


FILTERS: dict[str, Callable[[str, Lookups], str]] = {
    "copy_source": _copy_source,
    "arn_name": _arn_name,
    "iam_user": _lookup("iam_user"),
    "iam_role": _lookup("iam_role"),
    "iam_group": _lookup("iam_group"),
}


class TableError(ValueError):
    """An action table that does not fit its schema (a packaging bug, found at start-up)."""


def _values_at(params: Any, path: Sequence[str]) -> Iterator[Any]:
    """Every value at ``path`` (member names; ``name[]`` steps into each item of a list)."""
    if not path:
        if params is not None:
            yield params
        return
    step, rest = path[0], path[1:]
    each = step.endswith("[]")
    name = step[:-2] if each else step
    value = params.get(name) if isinstance(params, Mapping) else None
    if value is None:
        return
    if each:
        for item in value if isinstance(value, list) else ():
            yield from _values_at(item, rest)
    else:
        yield from _values_at(value, rest)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class RequestPath:
    """A dotted path into the request parameters, e.g. ``ResourceConfig.InstanceType``."""

    steps: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> RequestPath:
        return cls(tuple(text.split(".")))

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        return list(_values_at(params, self.steps))

    def present(self, params: Mapping[str, Any]) -> bool:
        return next(_values_at(params, self.steps), None) is not None


@dataclass(frozen=True)
class _Slot:
    path: RequestPath | None  # None: Partition / Region / Account
    name: str
    filter: Callable[[str, Lookups], str] | None = None


@dataclass(frozen=True)
class ResourceTemplate:
    """An ARN template; literal text and slots alternate in ``pieces``."""

    text: str
    pieces: tuple[str | _Slot, ...]
    #: Set when every slot is a built-in or one top-level string member without a filter (most
    #: templates): (literal, member name or None, is built-in) triples, rendered without generality.
    simple: tuple[tuple[str, str | None, bool], ...] | None = None
    #: A SageMaker ARN: names are lower-cased in it (SageMaker's ARNs spell them so).
    lower_names: bool = False

    @classmethod
    def parse(cls, text: str) -> ResourceTemplate:
        pieces: list[str | _Slot] = []
        last = 0
        for match in _PLACEHOLDER.finditer(text):
            pieces.append(text[last:match.start()])
            name, _, filter_name = match.group(1).partition("|")
            if filter_name and filter_name not in FILTERS:
                raise TableError(f"{text}: unknown filter {filter_name!r}")
            builtin = name in (PARTITION, REGION, ACCOUNT)
            pieces.append(_Slot(None if builtin else RequestPath.parse(name), name,
                                FILTERS[filter_name] if filter_name else None))
            last = match.end()
        pieces.append(text[last:])
        kept = tuple(p for p in pieces if p != "")
        return cls(text, kept, _simple_form(kept), text.startswith("arn:${Partition}:sagemaker:"))

    def render(self, params: Mapping[str, Any], region: str, account: str, lookups: Lookups) -> list[str]:
        """The ARNs this request names; ``["*"]`` when a member the template needs is absent."""
        if self.simple is not None:
            return [self._render_simple(params, region, account)]
        return [normal_arn(arn) for arn in self._render_general(params, region, account, lookups)]

    def _render_general(self, params: Mapping[str, Any], region: str, account: str, lookups: Lookups) -> list[str]:
        choices: list[list[str]] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                choices.append([piece])
            elif piece.path is None:
                choices.append([{PARTITION: "aws", REGION: region, ACCOUNT: account}[piece.name]])
            else:
                values = [_text(v) for v in piece.path.values(params)]
                if not values:
                    return ["*"]
                if piece.filter is not None:
                    values = [piece.filter(v, lookups) for v in values]
                choices.append(values)
        if len(choices) == 1:
            return choices[0]
        return ["".join(parts) for parts in product(*choices)]


    def _render_simple(self, params: Mapping[str, Any], region: str, account: str) -> str:
        assert self.simple is not None
        out = []
        for text, is_member in _resolved(self.simple, region, account):
            if not is_member:
                out.append(text)
                continue
            value = params.get(text)
            if value is None or isinstance(value, list | dict):
                return "*"
            value = value if type(value) is str else _text(value)
            out.append(value.lower() if self.lower_names else value)
        arn = "".join(out)
        return arn if self.lower_names else normal_arn(arn)  # a whole-ARN member (${ResourceArn}) too


@lru_cache(maxsize=4096)
def _resolved(simple: tuple[tuple[str, str | None, bool], ...], region: str,
              account: str) -> tuple[tuple[str, bool], ...]:
    """A simple template with its built-ins filled for one region and account: literal runs merged,
    members by name (rendering then only looks the members up)."""
    out: list[tuple[str, bool]] = []
    literal = ""
    for text, name, builtin in simple:
        if text:
            literal += text
        elif builtin:
            literal += "aws" if name == PARTITION else region if name == REGION else account
        else:
            if literal:
                out.append((literal, False))
            literal = ""
            out.append((str(name), True))
    if literal:
        out.append((literal, False))
    return tuple(out)


def normal_arn(resource: str) -> str:
    """SageMaker spells resource names in lower case in its ARNs, and authorizes against those."""
    if resource.startswith("arn:aws:sagemaker:"):
        head, sep, name = resource.partition("/")
        return head + sep + name.lower()
    return resource


def _simple_form(pieces: tuple[str | _Slot, ...]) -> tuple[tuple[str, str | None, bool], ...] | None:
    out: list[tuple[str, str | None, bool]] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append((piece, None, False))
        elif piece.filter is not None or (piece.path is not None and (
                len(piece.path.steps) != 1 or piece.path.steps[0].endswith("[]"))):
            return None
        else:
            out.append(("", piece.name, piece.path is None))
    return tuple(out)


@dataclass(frozen=True)
class Check:
    """One IAM check of an operation: ``action`` on every resource the request names."""

    action: str
    resources: tuple[ResourceTemplate, ...]
    #: Lower-case condition key -> the request members carrying its values.
    conditions: Mapping[str, tuple[RequestPath, ...]] = field(default_factory=dict)
    #: The resource's own tags (aws:ResourceTag/...) can be tested.
    resource_tags: bool = False
    when: RequestPath | None = None
    unless: RequestPath | None = None
    #: Condition keys with fixed values for this check (``iam:PassedToService`` of a role SageMaker will use).
    fixed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def applies(self, params: Mapping[str, Any]) -> bool:
        if self.when is not None and not self.when.present(params):
            return False
        return self.unless is None or not self.unless.present(params)

    def resource_arns(self, params: Mapping[str, Any], region: str, account: str, lookups: Lookups) -> list[str]:
        arns: list[str] = []
        for template in self.resources:
            arns += template.render(params, region, account, lookups)
        return arns or ["*"]

    def request_context(self, params: Mapping[str, Any]) -> dict[str, list[str]]:
        """The condition keys this request carries (lower-case key -> values)."""
        context: dict[str, list[str]] = {key: list(values) for key, values in self.fixed.items()}
        for key, paths in self.conditions.items():
            values = [v for path in paths for v in path.values(params)]
            if not values:
                continue
            if key in (REQUEST_TAG_KEY, TAG_KEYS_KEY):
                tags = [pair for value in values for pair in _tag_pairs(value)]
                if key == TAG_KEYS_KEY:
                    context[TAG_KEYS_KEY] = [k for k, _ in tags]
                else:
                    for tag_key, tag_value in tags:
                        context[f"aws:requesttag/{tag_key.lower()}"] = [tag_value]
                continue
            context[key] = [_text(v) for v in values]
        return context


def _tag_pairs(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        if "Key" in value:
            return [(str(value["Key"]), str(value.get("Value", "")))]
        return [(str(k), str(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [pair for item in value for pair in _tag_pairs(item)]
    if isinstance(value, str):  # S3's x-amz-tagging header: URL-encoded k=v&k2=v2
        pairs = [part.partition("=") for part in value.split("&") if part]
        return [(unquote(k), unquote(v)) for k, _, v in pairs]
    return []


@dataclass(frozen=True)
class Denial:
    """How a service answers a request its caller may not make."""

    code: str
    status: int


@dataclass(frozen=True)
class ServiceTable:
    service: str
    denial: Denial
    operations: Mapping[str, tuple[Check, ...]]


def _check(raw: Mapping[str, Any]) -> Check:
    unknown = set(raw) - {"action", "resources", "conditions", "resource_tags", "when", "unless", "context"}
    if unknown or "action" not in raw:
        raise TableError(f"bad check {raw!r}")
    return Check(
        action=raw["action"],
        resources=tuple(ResourceTemplate.parse(t) for t in raw.get("resources") or ["*"]),
        conditions={key.lower(): tuple(RequestPath.parse(p) for p in paths)
                    for key, paths in (raw.get("conditions") or {}).items()},
        resource_tags=bool(raw.get("resource_tags")),
        when=RequestPath.parse(raw["when"]) if raw.get("when") else None,
        unless=RequestPath.parse(raw["unless"]) if raw.get("unless") else None,
        fixed={key.lower(): tuple(values if isinstance(values, list) else [values])
               for key, values in (raw.get("context") or {}).items()},
    )


def parse_table(document: Mapping[str, Any]) -> ServiceTable:
    denial = document["denial"]
    return ServiceTable(
        service=document["service"],
        denial=Denial(denial["code"], int(denial["status"])),
        operations={name: tuple(_check(c) for c in checks) for name, checks in document["operations"].items()},
    )


@cache
def table(service: str) -> ServiceTable:
    """The packaged table of ``service`` (botocore's service name); loaded once per process."""
    path = resources.files("sagestack.authz").joinpath("actions", f"{service}.json")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TableError(f"no action table for the service {service!r}") from None
    return parse_table(json.loads(text))
