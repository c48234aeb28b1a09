"""Which AWS services this server speaks, and how a request is routed to one.

Service models come from botocore, so wire shapes always match the clients.
A route names the service and carries the protocol object that speaks it, so
nothing downstream compares protocol names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import botocore.session
from botocore.model import ServiceModel

from sagestack.aws.http import HttpRequest
from sagestack.aws.protocols.base import WireProtocol
from sagestack.aws.protocols.json import JSON
from sagestack.aws.protocols.query import QUERY
from sagestack.aws.protocols.rest import REST_JSON
from sagestack.aws.protocols.rest_xml import REST_XML
from sagestack.aws.protocols.s3 import S3

#: botocore service name -> the code AWS uses for a request that fails validation.
VALIDATION_CODES = {
    "sagemaker": "ValidationException",
    "sagemaker-runtime": "ValidationError",
    "logs": "InvalidParameterException",
    "cloudwatch": "InvalidParameterValue",
    "sts": "ValidationError",
    "iam": "ValidationError",
    "s3": "InvalidArgument",
    "application-autoscaling": "ValidationException",
}

#: The protocol object of each of botocore's protocol names ...
PROTOCOLS: dict[str, WireProtocol] = {"json": JSON, "query": QUERY, "rest-json": REST_JSON, "rest-xml": REST_XML}
#: ... unless the service speaks a dialect of its own.
DIALECTS: dict[tuple[str, str], WireProtocol] = {("s3", "rest-xml"): S3}

#: Where requests no service claims are answered: as STS would, in the query form.
FALLBACK_SERVICE = "sts"
#: The REST service told from S3 by its paths (every one of its operations is a POST).
RUNTIME_SERVICE = "sagemaker-runtime"


@dataclass(frozen=True)
class Route:
    """Where a request goes: a service, and the protocol object of the wire it arrived in."""

    service: str
    protocol: WireProtocol
    #: The error code of a request that fails validation (or has a value that does not fit its type).
    validation_code: str = ""


class ServiceCatalog:
    SERVICES = tuple(VALIDATION_CODES)

    def __init__(self) -> None:
        self._session = botocore.session.get_session()
        self._models: dict[str, ServiceModel] = {}
        #: A query request before its form is read: the form's Version names the service.
        self.form_routed = Route("", QUERY)
        #: The route of errors for requests no service claims.
        self.unrouted = self._route_to(FALLBACK_SERVICE, "query")

    def model(self, service: str) -> ServiceModel:
        model = self._models.get(service)
        if model is None:
            model = self._session.get_service_model(service)
            self._models[service] = model
        return model

    @staticmethod
    def protocol(service: str, protocol: str) -> WireProtocol:
        """The object that speaks ``service`` in botocore's protocol ``protocol`` ("json", "rest-xml", ...)."""
        return DIALECTS.get((service, protocol)) or PROTOCOLS[protocol]

    def _route_to(self, service: str, protocol: str) -> Route:
        return Route(service, self.protocol(service, protocol), VALIDATION_CODES[service])

    @cached_property
    def _json_targets(self) -> dict[str, Route]:
        return {self.model(s).metadata["targetPrefix"]: self._route_to(s, "json")
                for s in self.SERVICES if self.speaks(s, "json")}

    @cached_property
    def _query_versions(self) -> dict[str, Route]:
        return {self.model(s).metadata["apiVersion"]: self._route_to(s, "query")
                for s in self.SERVICES if self.speaks(s, "query")}

    @cached_property
    def _runtime(self) -> Route:
        return self._route_to(RUNTIME_SERVICE, "rest-json")

    @cached_property
    def _runtime_path(self) -> re.Pattern[str]:
        """Any of the runtime's request URIs: ``/endpoints/{EndpointName}/invocations``, ``.../async-invocations``..."""
        model = self.model(RUNTIME_SERVICE)
        uris = sorted({model.operation_model(name).http["requestUri"] for name in model.operation_names})
        return re.compile("^(?:" + "|".join(_uri_pattern(uri) for uri in uris) + ")/?$")

    @cached_property
    def _s3(self) -> Route:
        return self._route_to("s3", "rest-xml")

    def speaks(self, service: str, protocol: str) -> bool:
        metadata = self.model(service).metadata
        return protocol in metadata.get("protocols", [metadata.get("protocol")])

    def route(self, request: HttpRequest, query_params: dict[str, str] | None = None) -> Route | None:
        """Find the service from the request's shape (target header, form Version, path)."""
        target = request.headers.get("x-amz-target")
        if target is not None:
            return self._json_targets.get(target.rpartition(".")[0])
        if query_params is not None:
            return self._query_versions.get(query_params.get("Version", ""))
        if request.method == "POST" and self._runtime_path.match(request.raw_path):
            return self._runtime
        return self._s3

    @staticmethod
    def is_query_request(request: HttpRequest) -> bool:
        """Form-encoded POST to ``/``, or a GET carrying ``Action=``."""
        if request.raw_path not in ("", "/"):
            return False
        if request.method == "POST":
            return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        return request.method == "GET" and "Action" in request.query


def _uri_pattern(uri: str) -> str:
    """A regular expression for the paths a request URI template matches (labels are one segment or, ``+``, more)."""
    out = []
    for part in re.split(r"(\{[^}]+\})", uri.partition("?")[0]):
        if part.startswith("{"):
            out.append(".+" if part.endswith("+}") else "[^/]+")
        else:
            out.append(re.escape(part))
    return "".join(out)
