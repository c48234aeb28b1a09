"""Which AWS services this server speaks, and how a request is routed to one.

Service models come from botocore, so wire shapes always match the clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import botocore.session
from botocore.model import ServiceModel

from sagestack.aws.http import HttpRequest

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

_RUNTIME_PATH = re.compile(r"^/endpoints/[^/]+/invocations/?$")


@dataclass(frozen=True)
class Route:
    """Where a request goes: a service and the wire protocol it arrived in."""

    service: str
    #: "json", "query", "rest-json" or "rest-xml".
    protocol: str


class ServiceCatalog:
    SERVICES = tuple(VALIDATION_CODES)

    def __init__(self) -> None:
        self._session = botocore.session.get_session()
        self._models: dict[str, ServiceModel] = {}

    def model(self, service: str) -> ServiceModel:
        model = self._models.get(service)
        if model is None:
            model = self._session.get_service_model(service)
            self._models[service] = model
        return model

    @cached_property
    def _json_targets(self) -> dict[str, str]:
        return {self.model(s).metadata["targetPrefix"]: s for s in self.SERVICES if self._speaks(s, "json")}

    @cached_property
    def _query_versions(self) -> dict[str, str]:
        return {self.model(s).metadata["apiVersion"]: s for s in self.SERVICES if self._speaks(s, "query")}

    def _speaks(self, service: str, protocol: str) -> bool:
        metadata = self.model(service).metadata
        return protocol in metadata.get("protocols", [metadata.get("protocol")])

    def route(self, request: HttpRequest, query_params: dict[str, str] | None = None) -> Route | None:
        """Find the service from the request's shape (target header, form Version, path)."""
        target = request.headers.get("x-amz-target")
        if target is not None:
            service = self._json_targets.get(target.rpartition(".")[0])
            return Route(service, "json") if service else None
        if query_params is not None:
            service = self._query_versions.get(query_params.get("Version", ""))
            return Route(service, "query") if service else None
        if request.method == "POST" and _RUNTIME_PATH.match(request.raw_path):
            return Route("sagemaker-runtime", "rest-json")
        return Route("s3", "rest-xml")

    @staticmethod
    def is_query_request(request: HttpRequest) -> bool:
        """Form-encoded POST to ``/``, or a GET carrying ``Action=``."""
        if request.raw_path not in ("", "/"):
            return False
        if request.method == "POST":
            return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        return request.method == "GET" and "Action" in request.query
