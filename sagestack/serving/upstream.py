"""A lean keep-alive HTTP/1.1 client for talking to model servers on loopback.

The router forwards every InvokeEndpoint through here, so it is kept minimal:
one pool of idle connections per instance, requests written as one buffer,
responses parsed by httptools inside an ``asyncio.Protocol`` (no stream reader,
no task per request: a future and a timer), Nagle off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools

from sagestack.sockets import set_no_delay


class UpstreamError(ConnectionError):
    """The instance could not be reached or broke the connection: try another one."""


@dataclass
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[UpstreamResponse, bool]] | None = None
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        set_no_delay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(UpstreamError(f"the model server closed the connection{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"bad response from the model server: {exc}"))
            self.close()

    def send(self, payload: bytes) -> asyncio.Future[tuple[UpstreamResponse, bool]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.headers, self.parts = {}, []
        self.transport.write(payload)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    # ----------------------------------------------------------------- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        response = UpstreamResponse(self.parser.get_status_code(), self.headers, b"".join(self.parts))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((response, self.parser.should_keep_alive()))
        elif self.waiter is None:
            self.close()  # an answer nobody asked for: the connection is out of step


class UpstreamPool:
    def __init__(self, host: str, port: int, max_idle: int = 64, timeout: float = 60.0,
                 unix_socket: str | None = None) -> None:
        self.host = host
        self.port = port
        #: When set, connections go to this Unix socket of the same server (less kernel work per request).
        self.unix_socket = unix_socket
        self.max_idle = max_idle
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._head = f"Host: {host}:{port}\r\n".encode("latin-1")
        #: The loop the connections belong to; they may only be closed from it.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> UpstreamResponse:
        lines = [f"{method} {path} HTTP/1.1", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        payload = b"".join(((lines[0] + "\r\n").encode("latin-1"), self._head,
                            ("\r\n".join(lines[1:]) + "\r\n\r\n").encode("latin-1"), body))
        reused = bool(self._idle)
        try:
            return await self._exchange(payload)
        except (UpstreamError, OSError) as exc:
            if not reused:
                raise UpstreamError(str(exc)) from exc
        # A pooled connection may have been closed by the server meanwhile: one fresh try.
        self.close()
        try:
            return await self._exchange(payload)
        except OSError as exc:
            raise UpstreamError(str(exc)) from exc

    async def _exchange(self, payload: bytes) -> UpstreamResponse:
        connection = await self._connection()
        waiter = connection.send(payload)
        timer = asyncio.get_running_loop().call_later(self.timeout, _expire, waiter, self.timeout)
        try:
            response, keep = await waiter
        except BaseException:
            connection.close()
            raise
        finally:
            timer.cancel()
        connection.waiter = None
        if keep and connection.usable and len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
            connection.close()
        self._loop = asyncio.get_running_loop()
        if self.unix_socket:
            _, connection = await self._loop.create_unix_connection(_Connection, self.unix_socket)
        else:
            _, connection = await self._loop.create_connection(_Connection, self.host, self.port)
        return connection

    def close(self) -> None:
        """Drop idle connections; safe from any thread (transports are closed on their own loop)."""
        idle, self._idle = self._idle, []
        loop = self._loop
        if not idle or loop is None or loop.is_closed():
            return  # a closed loop already let go of its sockets
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _close_all(idle)
        else:
            loop.call_soon_threadsafe(_close_all, idle)


def _expire(waiter: asyncio.Future[tuple[UpstreamResponse, bool]], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamError(f"the model server did not answer within {timeout:g} s"))


def _close_all(connections: list[_Connection]) -> None:
    for connection in connections:
        connection.close()
