"""A lean HTTP/1.1 client for talking to model servers on loopback.

The router forwards every InvokeEndpoint through here, so it is kept minimal and
pipelined: one keep-alive connection per instance carries every request in
flight to it, and the requests made during one turn of the event loop leave in
one write. A model server answers one request at a time anyway (see
:mod:`sagestack.serving.model_server`), so a queue on one connection costs it
nothing, while each write that wakes another process is one of the dearest
things a request does (10-20 us on a small VM); under load several requests
now share one. Responses are parsed by httptools inside an ``asyncio.Protocol``
and matched to requests in order (HTTP/1.1 pipelining), each with a future; one
timer per connection watches the oldest request's deadline. Nagle off.
"""

from __future__ import annotations

import asyncio
from collections import deque
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
    """One keep-alive connection; requests pipelined on it are answered in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        #: Futures of the requests sent and not yet answered, oldest first, and when each gives up.
        self.waiters: deque[asyncio.Future[UpstreamResponse]] = deque()
        self.deadlines: deque[float] = deque()
        #: One timer for the oldest request (answers come in order), not one per request.
        self.watchdog: asyncio.TimerHandle | None = None
        self.outgoing: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.broken = False

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.broken and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        set_no_delay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(UpstreamError(f"the model server closed the connection{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamError(f"bad response from the model server: {exc}"))

    def send(self, payload: bytes, timeout: float) -> asyncio.Future[UpstreamResponse]:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if not self.waiters and self.transport is not None:
            self.transport.write(payload)  # the server is idle: wake it now
        else:
            # It is busy with an earlier request and reads this one only after answering that:
            # gather what arrives meanwhile into one write, at the end of this loop turn.
            if not self.outgoing:
                loop.call_soon(self._flush)
            self.outgoing.append(payload)
        self.waiters.append(waiter)
        self.deadlines.append(loop.time() + timeout)
        if self.watchdog is None:
            self.watchdog = loop.call_at(self.deadlines[0], self._check_deadline, loop, timeout)
        return waiter

    def _check_deadline(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.watchdog = None
        if not self.deadlines:
            return
        if self.deadlines[0] <= loop.time():
            self.fail(UpstreamError(f"the model server did not answer within {timeout:g} s"))
        else:
            self.watchdog = loop.call_at(self.deadlines[0], self._check_deadline, loop, timeout)

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.transport is not None and not self.broken:
            self.transport.writelines(outgoing)  # one write for every request of this loop turn

    def fail(self, error: Exception) -> None:
        """Fail every request in flight and drop the connection: its answers can no longer be matched."""
        self.broken = True
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.deadlines.clear()
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ----------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self.headers, self.parts = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if not self.waiters:
            self.fail(UpstreamError("the model server answered a request nobody sent"))
            return
        waiter = self.waiters.popleft()
        self.deadlines.popleft()
        if not waiter.done():  # else its caller was cancelled: the answer is dropped, the order kept
            waiter.set_result(UpstreamResponse(self.parser.get_status_code(), self.headers, b"".join(self.parts)))
        if not self.parser.should_keep_alive():
            self.fail(UpstreamError("the model server closed the connection"))


class UpstreamPool:
    """The way to one model server: a pipelined connection, replaced when it breaks."""

    def __init__(self, host: str, port: int, timeout: float = 60.0, unix_socket: str | None = None) -> None:
        self.host = host
        self.port = port
        #: When set, connections go to this Unix socket of the same server (less kernel work per request).
        self.unix_socket = unix_socket
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._head = f"Host: {host}:{port}\r\n".encode("latin-1")
        #: The loop the connection belongs to; it may only be closed from it.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> UpstreamResponse:
        lines = [f"{method} {path} HTTP/1.1", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        payload = b"".join(((lines[0] + "\r\n").encode("latin-1"), self._head,
                            ("\r\n".join(lines[1:]) + "\r\n\r\n").encode("latin-1"), body))
        connection = self._connection
        reused = connection is not None and connection.usable
        try:
            return await self._exchange(payload)
        except (UpstreamError, OSError) as exc:
            if not reused:
                raise UpstreamError(str(exc)) from exc
        # The kept connection may have been closed by the server meanwhile: one try on a fresh one.
        try:
            return await self._exchange(payload)
        except OSError as exc:
            raise UpstreamError(str(exc)) from exc

    async def _exchange(self, payload: bytes) -> UpstreamResponse:
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connect()
        return await connection.send(payload, self.timeout)

    async def _connect(self) -> _Connection:
        # Requests that find no connection while one is being opened wait for that one.
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = self._loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            if self.unix_socket:
                _, connection = await loop.create_unix_connection(_Connection, self.unix_socket)
            else:
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except BaseException as exc:
            self._connecting.set_exception(exc)
            self._connecting.exception()  # retrieved: the waiters (if any) raise it themselves
            raise
        else:
            self._connection = connection
            self._connecting.set_result(connection)
            return connection
        finally:
            self._connecting = None

    def close(self) -> None:
        """Drop the connection; safe from any thread (transports are closed on their own loop)."""
        connection, self._connection = self._connection, None
        loop = self._loop
        if connection is None or loop is None or loop.is_closed():
            return  # a closed loop already let go of its sockets
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            connection.close()
        else:
            loop.call_soon_threadsafe(connection.close)
