"""AWS-shaped errors.

Handlers raise :class:`AwsError`; the protocol layer serializes it in the wire
form of the service that was called (JSON ``__type``, query/rest-xml
``<Error>``). Nothing else ever reaches the client, so no request ends in a
traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AwsError(Exception):
    """An error a client should see: HTTP status, AWS error code and message."""

    code: str
    message: str
    status: int = 400
    sender_fault: bool = True
    #: Extra members serialized next to Code/Message (e.g. S3's BucketName, Key).
    extra: dict[str, str] = field(default_factory=dict)
    #: Extra HTTP response headers (e.g. InvokeEndpoint's log stream).
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")


def validation_error(message: str, code: str = "ValidationException") -> AwsError:
    """The usual 400 for a request that does not make sense."""
    return AwsError(code, message, 400)


def not_found(message: str, code: str = "ResourceNotFound") -> AwsError:
    return AwsError(code, message, 400)


def internal_error(request_id: str) -> AwsError:
    """What the client sees when a handler breaks: a 500 with no traceback."""
    return AwsError(
        "InternalFailure",
        f"The request processing has failed because of an unknown error (request {request_id}).",
        500,
        sender_fault=False,
    )
