"""REST protocols (rest-json, rest-xml): operations addressed by method, URI and query.

An operation is found by matching the request against every ``requestUri``
template of the service model; when several match (S3's PutObject, CopyObject
and UploadPart share ``PUT /{Bucket}/{Key+}``), the most specific wins: literal
query keys first, then required query and header members present; of equally
specific ones, an operation the model marks deprecated loses.

:class:`RestProtocol` reads and writes what lives in the URI, query and headers;
its subclasses the body documents (JSON here, XML in :mod:`.rest_xml`).
"""

from __future__ import annotations

import base64
import json
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any
from urllib.parse import unquote

from botocore.model import OperationModel, ServiceModel, Shape

from sagestack.aws.errors import AwsError
from sagestack.aws.http import HttpRequest, HttpResponse
from sagestack.aws.protocols import json as json_protocol
from sagestack.aws.protocols.base import WireProtocol
from sagestack.aws.values import WireValueError, scalar_to_text, text_to_scalar

#: Reserved result key: the HTTP status to answer with, when it is not the model's.
STATUS_KEY = "__status__"


# ---------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Route:
    operation: str
    method: str
    segments: tuple[str, ...]
    literal_query: tuple[tuple[str, str | None], ...]
    required_query: tuple[str, ...]
    required_headers: tuple[str, ...]
    #: Loses a tie to the operation that replaced it (S3's PutBucketLifecycle to PutBucketLifecycleConfiguration).
    deprecated: bool = False

    def score(self) -> int:
        literal_segments = sum(1 for s in self.segments if not s.startswith("{"))
        return (
            len(self.literal_query) * 1000
            + (len(self.required_query) + len(self.required_headers)) * 10
            + literal_segments
        )


def _route_of(op: OperationModel) -> _Route:
    uri = op.http.get("requestUri", "/")
    path, _, query = uri.partition("?")
    literal = []
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        literal.append((key, value if eq else None))
    required_query, required_headers = [], []
    shape = op.input_shape
    if shape is not None:
        for name in shape.required_members:
            member = shape.members[name]
            location = member.serialization.get("location")
            if location == "querystring":
                required_query.append(member.serialization.get("name", name))
            elif location == "header":
                required_headers.append(member.serialization.get("name", name).lower())
    return _Route(
        op.name,
        op.http.get("method", "POST"),
        tuple(filter(None, path.split("/"))),
        tuple(literal),
        tuple(required_query),
        tuple(required_headers),
        bool(op.deprecated),
    )


@lru_cache(maxsize=32)
def _routes(service: ServiceModel) -> list[_Route]:
    routes = [_route_of(service.operation_model(name)) for name in service.operation_names]
    return sorted(routes, key=lambda r: (-r.score(), r.deprecated))


@lru_cache(maxsize=32)
def _routes_by_start(service: ServiceModel) -> dict[tuple[str, str], list[_Route]]:
    """The routes a (method, first path segment) can match, most specific first.

    A route whose first segment is a label can match any first segment, so it is
    in every list of its method (and in the ``""`` list, for paths not listed).
    """
    routes = _routes(service)
    starts = {(r.method, r.segments[0]) for r in routes if r.segments and not r.segments[0].startswith("{")}
    starts |= {(r.method, "") for r in routes}
    return {
        (method, first): [
            r for r in routes
            if r.method == method and (not r.segments or r.segments[0].startswith("{") or r.segments[0] == first)
        ]
        for method, first in starts
    }


def _match_path(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    labels: dict[str, str] = {}
    for index, template in enumerate(segments):
        if template.endswith("+}"):
            rest = "/".join(parts[index:])
            if not rest:
                return None
            labels[template[1:-2]] = unquote(rest)
            return labels
        if index >= len(parts):
            return None
        if template.startswith("{"):
            if not parts[index]:
                return None
            labels[template[1:-1]] = unquote(parts[index])
        elif template != parts[index]:
            return None
    return labels if len(parts) == len(segments) else None


def _path_parts(raw_path: str) -> list[str]:
    path = raw_path[1:] if raw_path.startswith("/") else raw_path
    return path.split("/") if path else []


#: Recent matches: clients repeat the same few requests (one endpoint's invocations, one bucket's keys).
_MATCHES: dict[tuple[Any, ...], tuple[str, dict[str, str]] | None] = {}
_MAX_MATCHES = 4096


def match_operation(service: ServiceModel, request: HttpRequest) -> tuple[str, dict[str, str]] | None:
    """Return (operation name, URI labels) for the request, or None."""
    # A match depends only on the method, the path, the query and which route-selecting headers are present.
    key = (service.service_name, request.method, request.raw_path, request.query_string,
           *[name in request.headers for name in _selecting_headers(service)])
    if key in _MATCHES:
        found = _MATCHES[key]
    else:
        if len(_MATCHES) >= _MAX_MATCHES:
            _MATCHES.clear()
        found = _MATCHES[key] = _match_operation(service, request)
    return None if found is None else (found[0], dict(found[1]))


@lru_cache(maxsize=32)
def _selecting_headers(service: ServiceModel) -> tuple[str, ...]:
    return tuple(sorted({name for route in _routes(service) for name in route.required_headers}))


def _match_operation(service: ServiceModel, request: HttpRequest) -> tuple[str, dict[str, str]] | None:
    parts = _path_parts(request.raw_path)
    trimmed = parts[:-1] if parts and parts[-1] == "" else parts
    by_start = _routes_by_start(service)
    candidates = by_start.get((request.method, parts[0] if parts else "")) or by_start.get((request.method, ""), [])
    for route in candidates:
        if any(
            key not in request.query or (value is not None and request.query_value(key) != value)
            for key, value in route.literal_query
        ):
            continue
        if any(name not in request.query for name in route.required_query):
            continue
        if any(name not in request.headers for name in route.required_headers):
            continue
        labels = _match_path(route.segments, parts)
        if labels is None and trimmed is not parts:
            labels = _match_path(route.segments, trimmed)
        if labels is not None:
            return route.operation, labels
    return None


# ---------------------------------------------------------------- the protocols


class RestProtocol(WireProtocol):
    """Members in the URI, query and headers; the body document is the subclass's."""

    def find_operation(
        self, service: ServiceModel, request: HttpRequest, form: dict[str, str] | None
    ) -> tuple[str | None, dict[str, str]]:
        matched = match_operation(service, request)
        if matched is None:
            raise self.no_route_error()
        return matched

    def no_route_error(self) -> AwsError:
        return AwsError("UnknownOperationException", "No operation matches this request.", 404)

    def parse(
        self, operation: OperationModel, request: HttpRequest, form: dict[str, str] | None, labels: dict[str, str]
    ) -> dict[str, Any]:
        shape = operation.input_shape
        if shape is None:
            return {}
        params: dict[str, Any] = {}
        for located in _located_members(shape):
            value = _parse_located(located, request, labels)
            if value is not None:
                params[located.name] = value
        params.update(self._parse_body(shape, request))
        return params

    def _parse_body(self, shape: Shape, request: HttpRequest) -> dict[str, Any]:
        payload = shape.serialization.get("payload")
        if payload:
            member = shape.members[payload]
            if member.type_name in ("blob", "string"):
                if request.stream is not None:
                    return {payload: request.stream}
                body = request.body if member.type_name == "blob" else request.body.decode("utf-8", "replace")
                return {payload: body}
            if not request.body.strip():
                return {}
            return {payload: self.read_document(member, request.body)}
        body_members = [n for n, m in shape.members.items() if "location" not in m.serialization]
        if not body_members or not request.body.strip():
            return {}
        parsed: dict[str, Any] = self.read_document(shape, request.body)
        return parsed

    def serialize(self, operation: OperationModel, result: dict[str, Any] | None, request_id: str) -> HttpResponse:
        result = result or {}
        shape = operation.output_shape
        headers = self.request_id_headers(request_id)
        # The model's responseCode (S3's DELETEs answer 204); a handler may override it with
        # STATUS_KEY for statuses the output shape cannot express (S3's 206 and 304).
        status = int(result.get(STATUS_KEY) or operation.http.get("responseCode", 200))
        if shape is None:
            return HttpResponse(status, headers, b"")
        for name, location, wire_name, member, plain in _output_members(shape):
            value = result.get(name)
            if value is None:
                continue
            if location == "statusCode":
                status = int(value)
            elif location == "header":
                headers.append((wire_name, value if plain and isinstance(value, str) else _header_text(member, value)))
            else:
                headers.extend((wire_name + k.lower(), str(v)) for k, v in value.items())
        return HttpResponse(status, headers, self._serialize_body(shape, result, headers))

    def _serialize_body(
        self, shape: Shape, result: dict[str, Any], headers: list[tuple[str, str]]
    ) -> bytes | AsyncIterator[bytes]:
        payload = shape.serialization.get("payload")
        if payload:
            member = shape.members[payload]
            value = result.get(payload)
            if value is None:
                return b""
            if member.type_name in ("blob", "string"):
                return value.encode() if isinstance(value, str) else value
            return self.write_payload(member, value, member.serialization.get("name", payload), headers)
        body_members = {n for n, m in shape.members.items() if "location" not in m.serialization}
        present = {n: result[n] for n in body_members if result.get(n) is not None}
        return self.write_body(shape, present, headers)

    @abstractmethod
    def read_document(self, shape: Shape, body: bytes) -> Any:
        """The value of ``shape`` in a request body document."""

    @abstractmethod
    def write_payload(self, member: Shape, value: Any, name: str, headers: list[tuple[str, str]]) -> bytes:
        """The body of an output whose payload member is a structure (``name``: its wire name)."""

    @abstractmethod
    def write_body(self, shape: Shape, present: dict[str, Any], headers: list[tuple[str, str]]) -> bytes:
        """The body of an output whose body members (those present) are the document."""

    @abstractmethod
    def request_id_headers(self, request_id: str) -> list[tuple[str, str]]:
        """The response headers that carry the request id (a fresh list: the caller appends)."""


class RestJsonProtocol(RestProtocol):
    name = "rest-json"
    auth_family = "rest-json"

    def read_document(self, shape: Shape, body: bytes) -> Any:
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise WireValueError(f"Could not parse the request body as JSON: {exc}") from exc
        return json_protocol.from_json(shape, document, "")

    def write_payload(self, member: Shape, value: Any, name: str, headers: list[tuple[str, str]]) -> bytes:
        return self.write_body(member, value, headers)

    def write_body(self, shape: Shape, present: dict[str, Any], headers: list[tuple[str, str]]) -> bytes:
        set_default(headers, "content-type", "application/json")
        return json.dumps(json_protocol.to_json(shape, present)).encode()

    def request_id_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [("x-amzn-requestid", request_id)]

    def serialize_error(
        self, service: ServiceModel, error: AwsError, request_id: str, request: HttpRequest
    ) -> HttpResponse:
        headers = self.request_id_headers(request_id)
        headers.extend((k.lower(), v) for k, v in error.headers.items())
        headers.append(("content-type", "application/json"))
        headers.append(("x-amzn-errortype", error.code))
        document: dict[str, Any] = {"message": error.message}
        document.update(error.extra)
        return HttpResponse(error.status, headers, json.dumps(document).encode())


REST_JSON = RestJsonProtocol()


# ---------------------------------------------------------------- members outside the body


@dataclass(frozen=True)
class _Located:
    """A member read from the URI, the query or headers, with its model facts looked up once."""

    name: str
    location: str
    #: The wire name; lower-cased for header locations (request headers are lower-case).
    wire_name: str
    member: Shape


@cache  # per input shape, once: every request of an operation walks the same members
def _located_members(shape: Shape) -> tuple[_Located, ...]:
    entries = []
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        if location in ("uri", "querystring", "header", "headers"):
            wire_name = member.serialization.get("name", name)
            if location in ("header", "headers"):
                wire_name = wire_name.lower()
            entries.append(_Located(name, location, wire_name, member))
    return tuple(entries)


def _parse_located(located: _Located, request: HttpRequest, labels: dict[str, str]) -> Any:
    location, wire_name, member = located.location, located.wire_name, located.member
    if location == "header":
        raw = request.headers.get(wire_name)
        return None if raw is None else _parse_header(member, raw)
    if location == "uri":
        raw = labels.get(wire_name)
        return None if raw is None else text_to_scalar(raw, member.type_name)
    if location == "querystring":
        return _parse_query_member(member, wire_name, request)
    return {k[len(wire_name) :]: v for k, v in request.headers.items() if k.startswith(wire_name)} or None


def _parse_query_member(member: Shape, wire_name: str, request: HttpRequest) -> Any:
    if member.type_name == "map":
        return {k: v[0] for k, v in request.query.items()} or None
    values = request.query.get(wire_name)
    if values is None:
        return None
    if member.type_name == "list":
        return [text_to_scalar(v, member.member.type_name) for v in values]
    fmt = member.serialization.get("timestampFormat", "iso8601")
    return text_to_scalar(values[0], member.type_name, fmt)


def _parse_header(member: Shape, raw: str) -> Any:
    if member.serialization.get("jsonvalue"):
        return json.loads(base64.b64decode(raw))
    if member.type_name == "list":
        return [text_to_scalar(v.strip(), member.member.type_name) for v in raw.split(",")]
    fmt = member.serialization.get("timestampFormat", "rfc822")
    return text_to_scalar(raw, member.type_name, fmt)


@cache  # per output shape, once: every response of an operation walks the same members
def _output_members(shape: Shape) -> tuple[tuple[str, str, str, Shape, bool], ...]:
    """(name, location, lower-case wire name, shape, sent as is) of the members outside the body."""
    return tuple(
        (name, member.serialization["location"], member.serialization.get("name", name).lower(), member,
         member.type_name == "string" and not member.serialization.get("jsonvalue"))
        for name, member in shape.members.items()
        if member.serialization.get("location") in ("statusCode", "header", "headers")
    )


def _header_text(member: Shape, value: Any) -> str:
    if member.serialization.get("jsonvalue"):
        return base64.b64encode(json.dumps(value).encode()).decode()
    if member.type_name == "list":
        return ",".join(scalar_to_text(v, member.member.type_name) for v in value)
    fmt = member.serialization.get("timestampFormat", "rfc822")
    return scalar_to_text(value, member.type_name, fmt)


def set_default(headers: list[tuple[str, str]], name: str, value: str) -> None:
    if not any(k == name for k, _ in headers):
        headers.append((name, value))
