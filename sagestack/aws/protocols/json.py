"""AWS JSON 1.0 / 1.1: ``POST /`` with ``X-Amz-Target: <prefix>.<Operation>``."""

from __future__ import annotations

import base64
import json
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape

from sagestack.aws.errors import AwsError
from sagestack.aws.http import HttpRequest, HttpResponse
from sagestack.aws.protocols.base import NO_LABELS, WireProtocol
from sagestack.aws.values import WireValueError, format_timestamp, parse_timestamp, serialization_error

_INT_TYPES = ("integer", "long", "short", "byte")


def content_type(service: ServiceModel) -> str:
    return f"application/x-amz-json-{service.metadata.get('jsonVersion', '1.0')}"


def from_json(shape: Shape, value: Any, path: str) -> Any:
    """Convert a JSON document to the Python value of ``shape``, checking types."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure":
        _expect(isinstance(value, dict), "structure", path)
        members = shape.members
        return {
            key: from_json(members[key], item, f"{path}.{key}" if path else key)
            for key, item in value.items()
            if key in members
        }
    if kind == "list":
        _expect(isinstance(value, list), "list", path)
        return [from_json(shape.member, item, path) for item in value]
    if kind == "map":
        _expect(isinstance(value, dict), "map", path)
        return {key: from_json(shape.value, item, path) for key, item in value.items()}
    return _scalar(kind, value, path)


def _scalar(kind: str, value: Any, path: str) -> Any:
    if kind in ("string", "character"):
        _expect(isinstance(value, str), "string", path)
        return value
    if kind == "boolean":
        _expect(isinstance(value, bool), "boolean", path)
        return value
    if kind in _INT_TYPES:
        _expect(isinstance(value, int) and not isinstance(value, bool), "integer", path)
        return value
    if kind in ("float", "double"):
        _expect(isinstance(value, int | float) and not isinstance(value, bool), "number", path)
        return float(value)
    if kind == "timestamp":
        try:
            return parse_timestamp(value)
        except WireValueError as exc:
            raise serialization_error(f"Invalid timestamp at '{path}': {value!r}") from exc
    if kind == "blob":
        _expect(isinstance(value, str), "base64 string", path)
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise serialization_error(f"Invalid base64 at '{path}'") from exc
    return value


def _expect(ok: bool, what: str, path: str) -> None:
    if not ok:
        raise serialization_error(f"Expected a {what} at '{path or 'request'}'.")


def to_json(shape: Shape, value: Any) -> Any:
    """Convert a handler's Python value to JSON-ready data for ``shape``."""
    kind = shape.type_name
    if kind == "structure":
        members = shape.members
        out = {}
        for key, item in value.items():
            member = members.get(key)
            if member is not None and item is not None:
                out[key] = to_json(member, item)
        return out
    if kind == "list":
        return [to_json(shape.member, item) for item in value]
    if kind == "map":
        return {key: to_json(shape.value, item) for key, item in value.items() if item is not None}
    if kind == "timestamp":
        return format_timestamp(value, shape.serialization.get("timestampFormat", "unixTimestamp"))
    if kind == "blob":
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode()
    if kind in ("float", "double"):
        return float(value)
    return value


class JsonProtocol(WireProtocol):
    name = "json"
    auth_family = "json"

    def find_operation(
        self, service: ServiceModel, request: HttpRequest, form: dict[str, str] | None
    ) -> tuple[str | None, dict[str, str]]:
        target = request.headers.get("x-amz-target", "")
        return target.rpartition(".")[2] or None, NO_LABELS

    def parse(
        self, operation: OperationModel, request: HttpRequest, form: dict[str, str] | None, labels: dict[str, str]
    ) -> dict[str, Any]:
        shape = operation.input_shape
        if shape is None or not request.body.strip():
            return {}
        try:
            document = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise serialization_error(f"Could not parse the request body as JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise serialization_error("The request body must be a JSON object.")
        return from_json(shape, document, "")

    def serialize(self, operation: OperationModel, result: dict[str, Any] | None, request_id: str) -> HttpResponse:
        shape = operation.output_shape
        document = to_json(shape, result or {}) if shape is not None else {}
        body = json.dumps(document, separators=(",", ":")).encode()
        return HttpResponse(
            200,
            [("content-type", content_type(operation.service_model)), ("x-amzn-requestid", request_id)],
            body,
        )

    def serialize_error(
        self, service: ServiceModel, error: AwsError, request_id: str, request: HttpRequest
    ) -> HttpResponse:
        document: dict[str, Any] = {"__type": error.code, "message": error.message}
        document.update(error.extra)
        headers = [
            ("content-type", content_type(service)),
            ("x-amzn-requestid", request_id),
            ("x-amzn-errortype", error.code),
        ]
        if "awsQueryCompatible" in service.metadata:
            # Clients that came from the query protocol read the code from this header.
            fault = "Sender" if error.sender_fault else "Receiver"
            headers.append(("x-amzn-query-error", f"{error.code};{fault}"))
        headers.extend((name.lower(), value) for name, value in error.headers.items())
        return HttpResponse(error.status, headers, json.dumps(document).encode())


JSON = JsonProtocol()
