"""AWS query: form-encoded ``Action=...&Version=...`` requests, XML responses.

A value that does not fit its member raises WireValueError: the gateway answers
it with the service's own validation code (IAM's ValidationError, CloudWatch's
InvalidParameterValue, ...).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from botocore.model import OperationModel, ServiceModel, Shape

from sagestack.aws.errors import AwsError
from sagestack.aws.http import HttpRequest, HttpResponse
from sagestack.aws.protocols.base import NO_LABELS, WireProtocol
from sagestack.aws.protocols.xml import is_flattened, member_name, structure_body
from sagestack.aws.values import WireValueError, text_to_scalar

XML_CONTENT_TYPE = "text/xml"


def _read(shape: Shape, flat: dict[str, str], prefix: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _read_structure(shape, flat, prefix + ".")
    if kind == "list":
        return _read_list(shape, flat, prefix)
    if kind == "map":
        return _read_map(shape, flat, prefix)
    if prefix not in flat:
        return None
    fmt = shape.serialization.get("timestampFormat", "iso8601")
    try:
        return text_to_scalar(flat[prefix], kind, fmt)
    except WireValueError as exc:
        raise WireValueError(f"Invalid value for parameter {prefix}: {exc}") from exc


def _has_prefix(flat: dict[str, str], prefix: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for key in flat)


def _read_structure(shape: Shape, flat: dict[str, str], prefix: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, member in shape.members.items():
        name = prefix + member_name(member, key)
        if member.type_name in ("structure", "list", "map"):
            if not _has_prefix(flat, name):
                continue
        elif name not in flat:
            continue
        value = _read(member, flat, name)
        if value is not None:
            result[key] = value
    return result


def _read_list(shape: Shape, flat: dict[str, str], prefix: str) -> list[Any] | None:
    if flat.get(prefix) == "":
        return []  # botocore sends an empty list as "Name="
    if is_flattened(shape):
        item_prefix = prefix
        if shape.member.serialization.get("name"):
            item_prefix = ".".join([*prefix.split(".")[:-1], member_name(shape.member, "")])
    else:
        item_prefix = f"{prefix}.{member_name(shape.member, 'member')}"
    items = []
    index = 1
    while _has_prefix(flat, f"{item_prefix}.{index}"):
        items.append(_read(shape.member, flat, f"{item_prefix}.{index}"))
        index += 1
    return items


def _read_map(shape: Shape, flat: dict[str, str], prefix: str) -> dict[str, Any]:
    base = prefix if is_flattened(shape) else f"{prefix}.entry"
    key_name = member_name(shape.key, "key")
    value_name = member_name(shape.value, "value")
    result: dict[str, Any] = {}
    index = 1
    while f"{base}.{index}.{key_name}" in flat:
        key = _read(shape.key, flat, f"{base}.{index}.{key_name}")
        result[key] = _read(shape.value, flat, f"{base}.{index}.{value_name}")
        index += 1
    return result


def _namespace(service: ServiceModel) -> str:
    return service.metadata.get("xmlNamespace", "")


class QueryProtocol(WireProtocol):
    """Also the form of requests no service claims: they are answered as the catalog's fallback route."""

    name = "query"
    auth_family = "query"
    routed_by_form = True

    def read_form(self, request: HttpRequest) -> dict[str, str]:
        """The flat parameter map: form body for POST, query string for GET."""
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        if request.body:
            try:
                params.update(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError as exc:
                raise AwsError("MalformedQueryString", "The request body is not UTF-8.", 400) from exc
        return params

    def find_operation(
        self, service: ServiceModel, request: HttpRequest, form: dict[str, str] | None
    ) -> tuple[str | None, dict[str, str]]:
        return (form or {}).get("Action"), NO_LABELS

    def parse(
        self, operation: OperationModel, request: HttpRequest, form: dict[str, str] | None, labels: dict[str, str]
    ) -> dict[str, Any]:
        shape = operation.input_shape
        return {} if shape is None else _read_structure(shape, form or {}, "")

    def serialize(self, operation: OperationModel, result: dict[str, Any] | None, request_id: str) -> HttpResponse:
        name = operation.name
        ns = _namespace(operation.service_model)
        out = [f'<{name}Response xmlns="{ns}">']
        shape = operation.output_shape
        if shape is not None:
            wrapper = shape.serialization.get("resultWrapper", f"{name}Result")
            out.append(f"<{wrapper}>")
            out.extend(structure_body(shape, result or {}))
            out.append(f"</{wrapper}>")
        out.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>")
        body = "".join(out).encode()
        return HttpResponse(200, [("content-type", XML_CONTENT_TYPE), ("x-amzn-requestid", request_id)], body)

    def serialize_error(
        self, service: ServiceModel, error: AwsError, request_id: str, request: HttpRequest
    ) -> HttpResponse:
        fault = "Sender" if error.sender_fault else "Receiver"
        extra = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in error.extra.items())
        body = (
            f'<ErrorResponse xmlns="{_namespace(service)}"><Error><Type>{fault}</Type>'
            f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>{extra}</Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("content-type", XML_CONTENT_TYPE), ("x-amzn-requestid", request_id)]
        headers.extend((k.lower(), v) for k, v in error.headers.items())
        return HttpResponse(error.status, headers, body)


QUERY = QueryProtocol()
