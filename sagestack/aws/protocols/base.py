"""What every wire protocol object offers the gateway.

One object per protocol family (json, query, rest-json, rest-xml and S3's
rest-xml), chosen once when a request is routed: the gateway asks it, never a
protocol name, how to find the operation, parse, serialize and refuse.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from botocore.model import OperationModel, ServiceModel

from sagestack.aws import sigv4
from sagestack.aws.errors import AwsError
from sagestack.aws.http import HttpRequest, HttpResponse

#: URI labels of a request that has none (every non-REST protocol); never mutated.
NO_LABELS: dict[str, str] = {}


class WireProtocol(ABC):
    #: botocore's name of the wire format: "json", "query", "rest-json" or "rest-xml".
    name: ClassVar[str]
    #: sigv4's protocol family: the canonicalization it checks and the error codes it answers with.
    auth_family: ClassVar[str]
    #: The request names its service in its form (query's Version): it is routed once the body is read.
    routed_by_form: ClassVar[bool] = False
    #: ``<bucket>.<suffix>`` hosts address ``/<bucket>`` (S3's virtual-hosted style).
    virtual_hosts: ClassVar[bool] = False
    #: Payloads the model marks streaming reach the handler unread, as a BodyStream.
    streams_payloads: ClassVar[bool] = False

    def read_form(self, request: HttpRequest) -> dict[str, str] | None:
        """The flat parameters a form-routed protocol reads before routing; None for the others."""
        return None

    @abstractmethod
    def find_operation(
        self, service: ServiceModel, request: HttpRequest, form: dict[str, str] | None
    ) -> tuple[str | None, dict[str, str]]:
        """(operation name as the request names it, URI labels); raises AwsError when nothing can match."""

    @abstractmethod
    def parse(
        self, operation: OperationModel, request: HttpRequest, form: dict[str, str] | None, labels: dict[str, str]
    ) -> dict[str, Any]:
        """The request's parameters in the input shape.

        Raises :class:`~sagestack.aws.values.WireValueError` for a value that does not fit
        its member (the gateway answers the service's validation code) or an AwsError.
        """

    @abstractmethod
    def serialize(self, operation: OperationModel, result: dict[str, Any] | None, request_id: str) -> HttpResponse:
        """A handler's result written in the output shape."""

    @abstractmethod
    def serialize_error(
        self, service: ServiceModel, error: AwsError, request_id: str, request: HttpRequest
    ) -> HttpResponse:
        """``error`` in this protocol's error form."""

    def auth_error(self, failure: sigv4.AuthFailure) -> AwsError:
        """The error AWS answers an authentication failure with in this protocol."""
        return sigv4.to_aws_error(failure, self.auth_family)
