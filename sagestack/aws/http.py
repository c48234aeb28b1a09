"""The HTTP request/response as the protocol layer sees them (independent of ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class HttpRequest:
    method: str
    #: The path exactly as sent (percent-encoded), as SigV4 signs it.
    raw_path: str
    #: The query string exactly as sent.
    query_string: str
    #: Lower-case header names; repeated headers joined with ",".
    headers: dict[str, str]
    body: bytes = b""
    #: Set instead of ``body`` for requests whose payload is streamed (S3 uploads).
    stream: BodyStream | None = None
    #: The path as signed when it differs from ``raw_path`` (virtual-host S3 requests).
    signed_path: str | None = None
    #: The client's address (``aws:SourceIp``) and whether it came over TLS (``aws:SecureTransport``).
    client_ip: str = ""
    secure: bool = False
    query: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.query = parse_qs(self.query_string, keep_blank_values=True) if self.query_string else {}

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    #: Bytes, or an async iterator of chunks for streamed bodies.
    body: bytes | AsyncIterator[bytes] = b""


class BodyStream:
    """A request body delivered chunk by chunk, decoded and verified on the way.

    ``transform`` (e.g. an aws-chunked decoder or a payload-hash checker) sees every
    raw chunk; ``finish`` runs at the end and may raise an AwsError (hash mismatch,
    truncated body), so a handler that consumes the stream to the end knows the
    body was complete and authentic before it commits anything.
    """

    def __init__(
        self,
        receive: Receive,
        transform: Callable[[bytes], bytes] | None = None,
        finish: Callable[[], dict[str, str]] | None = None,
        declared_length: int | None = None,
    ) -> None:
        self._receive = receive
        self._transform = transform
        self._finish = finish
        self.declared_length = declared_length
        self.trailers: dict[str, str] = {}
        self._done = False

    @property
    def finished(self) -> bool:
        """Whether the whole body was received (an early error response leaves it unread)."""
        return self._done

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self._done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                from sagestack.aws.errors import AwsError

                raise AwsError("IncompleteBody", "The request body terminated unexpectedly", 400)
            raw = message.get("body", b"")
            more = message.get("more_body", False)
            data = self._transform(raw) if self._transform else raw
            if data:
                yield data
            if not more:
                self._done = True
        if self._finish is not None:
            self.trailers = self._finish() or {}

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)
