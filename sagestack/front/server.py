"""A lean HTTP/1.1 front for the gateway: small, fully buffered calls on a port of their own.

The main port runs uvicorn and ASGI, which every kind of call needs somewhere
(streamed S3 bodies, WebSockets of notebooks, flow control). For the hottest call
of all, a one-row InvokeEndpoint, that machinery — scope dicts, a task and
message dicts per request, middleware — costs more than routing, SigV4 and the
model together. This front is an ``asyncio.Protocol`` fed by ``httptools``
that hands each complete request straight to :meth:`Gateway.respond` and writes
the answer in one ``write``: the same pipeline (authentication, parsing,
validation, AWS-shaped errors), without ASGI. AWS, too, serves the runtime on a
host of its own (``runtime.sagemaker.<region>.amazonaws.com``); clients find this
one through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, which ``sagestack env`` prints.

Requests are answered one at a time per connection, in order (pipelined ones
wait their turn, reading pauses meanwhile); bodies are limited to ``max_body``.
Request buffering, the body limit, 100-continue, TCP_NODELAY and the idle sweep
are the core shared with the model server (:mod:`sagestack.httpcore`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from sagestack.aws.http import HttpRequest, HttpResponse
from sagestack.httpcore import Http1Connection, Http1Server

if TYPE_CHECKING:
    from sagestack.aws.gateway import Gateway

log = logging.getLogger("sagestack.http1")

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
            424: "Failed Dependency", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


class FrontServer(Http1Server):
    """Listens on one port and serves the gateway's calls of the given services.

    It accepts connections itself, so that each one can be served here or handed
    to another process (``hand_off`` returns True when it took the socket; see
    :mod:`sagestack.front.pool`); :meth:`serve` adopts a connection accepted elsewhere.
    """

    def __init__(self, gateway: Gateway, services: frozenset[str], max_body: int,
                 idle_timeout: float = 75.0, hand_off: Callable[[socket.socket], bool] | None = None) -> None:
        super().__init__(max_body, idle_timeout)
        self.gateway = gateway
        self.services = services
        self.hand_off = hand_off
        self._listeners: list[socket.socket] = []
        self._ssl: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Connections between accept and connection_made (a TLS handshake): the loop only holds tasks weakly.
        self._adopting: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen; returns the bound port (useful with ``port=0``)."""
        self.attach(ssl_context)
        loop = asyncio.get_running_loop()
        addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in dict.fromkeys(addresses):
            if self._listeners:  # port 0: every address on the port the first one got
                address = (address[0], self._listeners[0].getsockname()[1], *address[2:])
            listener = socket.socket(family, kind, proto)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(1024)
            listener.setblocking(False)
            loop.add_reader(listener.fileno(), self._accept, listener)
            self._listeners.append(listener)
        return self._listeners[0].getsockname()[1]

    def attach(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Serve on the running loop without listening: connections come through :meth:`serve`."""
        loop = self._loop = asyncio.get_running_loop()
        self._ssl = ssl_context
        loop.call_later(self.idle_timeout, self.sweep_idle, loop)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # a burst of connections in one wakeup, but other work is not starved
            try:
                connection, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: pause accepting for a second, as asyncio does
                log.warning("runtime port: accept failed (%s); retrying in 1 s", exc)
                self._pause_accepting(listener)
                return
            if self.hand_off is not None and self.hand_off(connection):
                connection.close()  # the worker holds its own descriptor of it
            else:
                self.serve(connection)

    def _pause_accepting(self, listener: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_reader(listener.fileno())
        self._loop.call_later(1.0, self._resume_accepting, listener)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self._loop is not None and listener in self._listeners:  # not stopped meanwhile
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def serve(self, connection: socket.socket) -> None:
        """Serve a connection accepted here or by another process (TLS handshake included)."""
        connection.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._adopt(connection))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _adopt(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _Connection(self), connection, ssl=self._ssl)
        except (OSError, ssl.SSLError) as exc:  # a client gone before, or failing, the TLS handshake
            log.debug("runtime port: connection dropped before serving: %s", exc)
            connection.close()

    def sweeping(self) -> bool:
        return self._loop is not None  # stopped: the idle sweep ends

    async def stop(self) -> None:
        if self._loop is None:
            return
        for listener in self._listeners:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners = []
        self.close_connections()
        self._loop = None


class _Connection(Http1Connection):
    server: FrontServer

    def __init__(self, front: FrontServer) -> None:
        #: (request or ready answer, keep-alive, close after a "Connection: close" answer)
        self.pending: deque[tuple[HttpRequest | HttpResponse, bool, bool]] = deque()
        self.closing = False
        self.paused = False
        self.worker: asyncio.Task[None] | None = None
        super().__init__(front)

    def _begin(self) -> None:
        Http1Connection._begin(self)  # not super(): this runs per request, and super() costs ~0.1 us more
        self.headers: dict[str, str] = {}

    def idle(self) -> bool:
        return self.worker is None

    # ----------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        self.secure = transport.get_extra_info("sslcontext") is not None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.seen = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Protocol upgrades are not served on this port.")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Malformed HTTP request: {exc}")

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    # ----------------------------------------------------------------- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length", "")
        self.declared_length = int(length) if length.isdigit() else -1
        self.expect_continue = self.headers.get("expect", "").lower() == "100-continue"
        Http1Connection.on_headers_complete(self)

    def request_complete(self, body: bytes) -> None:
        path, _, query = self.url.decode("latin-1").partition("?")
        request = HttpRequest(method=self.parser.get_method().decode(), raw_path=path, query_string=query,
                              headers=self.headers, body=body, client_ip=self.client_ip, secure=self.secure)
        self._enqueue(request, self.parser.should_keep_alive())

    def rejected_body_read(self) -> None:
        self.closing = True  # the 413 said so; close once it has been written
        if self.worker is None:
            self.close()

    def reject_too_large(self) -> None:
        self._enqueue(_plain(413, f"The request body is larger than {self.server.max_body} bytes."), False,
                      close=False)

    def _enqueue(self, item: HttpRequest | HttpResponse, keep_alive: bool, close: bool = True) -> None:
        self.pending.append((item, keep_alive, close))
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._drain())
        elif not self.paused and self.transport is not None:
            # A pipelining client: the rest waits in the socket until this batch is answered. (Pausing
            # only then saves two epoll calls per request for the usual one-at-a-time client.)
            self.transport.pause_reading()
            self.paused = True

    # ----------------------------------------------------------------- answering

    async def _drain(self) -> None:
        try:
            while self.pending and self.transport is not None:
                item, keep_alive, close = self.pending.popleft()
                if isinstance(item, HttpRequest):
                    response = await self.server.gateway.respond(item, self.server.services)
                else:
                    response = item
                self._write(response, keep_alive, head=isinstance(item, HttpRequest) and item.method == "HEAD",
                            close=close or self.closing)
        finally:
            self.worker = None
            if self.closing:
                self.close()
            elif self.paused and self.transport is not None:
                self.transport.resume_reading()
                self.paused = False

    def _write(self, response: HttpResponse, keep_alive: bool, head: bool = False, close: bool = True) -> None:
        transport = self.transport
        if transport is None:
            return
        body = response.body if isinstance(response.body, bytes | bytearray) else b""
        reason = _REASONS.get(response.status, "Status")
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in response.headers if name.lower() != "content-length")
        lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head_bytes if head else head_bytes + body)  # one segment for small answers
        if not keep_alive and close:
            self.close()

    def _refuse(self, status: int, message: str) -> None:
        self.pending.clear()
        self._write(_plain(status, message), keep_alive=False)


def _plain(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, [("Content-Type", "text/plain; charset=utf-8")], message.encode())
