"""rest-xml: the REST protocol whose body documents are XML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from botocore.model import ServiceModel, Shape

from sagestack.aws.errors import AwsError
from sagestack.aws.http import HttpRequest, HttpResponse
from sagestack.aws.protocols import xml as xml_protocol
from sagestack.aws.protocols.rest import RestProtocol, set_default
from sagestack.aws.values import scalar_to_text

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class RestXmlProtocol(RestProtocol):
    """``namespace`` and ``roots`` name the root elements of response bodies, which the model does not
    (botocore ignores the root when parsing): ``roots`` maps output shape names to them, and any other
    root is the shape name without its Output/Result suffix."""

    name = "rest-xml"
    # AWS's rest-xml services other than S3 answer authentication failures with the query codes.
    auth_family = "query"

    def __init__(self, namespace: str = "", roots: Mapping[str, str] | None = None) -> None:
        self.namespace = namespace
        self.roots: Mapping[str, str] = roots or {}

    def read_document(self, shape: Shape, body: bytes) -> Any:
        return xml_protocol.read_element(shape, xml_protocol.parse_document(body))

    def write_payload(self, member: Shape, value: Any, name: str, headers: list[tuple[str, str]]) -> bytes:
        out = [_XML_DECLARATION]
        ns = member.serialization.get("xmlNamespace", {}).get("uri")
        xml_protocol.write_element(out, member, value, name, ns)
        set_default(headers, "content-type", "application/xml")
        return "".join(out).encode()

    def write_body(self, shape: Shape, present: dict[str, Any], headers: list[tuple[str, str]]) -> bytes:
        if not present and not self.roots.get(shape.name):
            return b""
        root = self.roots.get(shape.name, shape.name.removesuffix("Output").removesuffix("Result"))
        ns = f' xmlns="{self.namespace}"' if self.namespace else ""
        set_default(headers, "content-type", "application/xml")
        out = [_XML_DECLARATION]
        only = shape.members.get(root)
        if only is not None and len(present) <= 1 and only.type_name not in ("structure", "list", "map"):
            # The single member *is* the root (e.g. S3's <LocationConstraint>).
            text = scalar_to_text(present[root], only.type_name) if root in present else ""
            out.append(f"<{root}{ns}>{escape(text)}</{root}>")
            return "".join(out).encode()
        out.append(f"<{root}{ns}>")
        out.extend(xml_protocol.structure_body(shape, present))
        out.append(f"</{root}>")
        return "".join(out).encode()

    def request_id_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [("x-amz-request-id", request_id), ("x-amz-id-2", request_id)]

    def serialize_error(
        self, service: ServiceModel, error: AwsError, request_id: str, request: HttpRequest
    ) -> HttpResponse:
        headers = self.request_id_headers(request_id)
        headers.extend((k.lower(), v) for k, v in error.headers.items())
        headers.append(("content-type", "application/xml"))
        if request.method == "HEAD":
            return HttpResponse(error.status, headers, b"")
        extra = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in error.extra.items())
        body = (
            f"{_XML_DECLARATION}<Error><Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
            f"{extra}<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
        ).encode()
        return HttpResponse(error.status, headers, body)


REST_XML = RestXmlProtocol()
