"""The HTTP/1.1 connection core of the platform's two hand-written servers.

The runtime front (:mod:`sagestack.front.server`) and the model server
(:mod:`sagestack.serving.model_server`) are both an ``asyncio.Protocol`` fed by
``httptools``, so the parts of a connection that must behave the same live here:
buffering one request's body (``max_body``: a declared length over it is
refused at the headers, a chunked body once it grows past it, and the 413 is
answered *before* the connection closes, once the rest of the body has been
read), ``Expect: 100-continue``, TCP_NODELAY, the set of open connections and
the keep-alive idle sweep.

What stays with each server, because it is where they differ by design rather
than by a value:

* answering: the model server answers synchronously inside ``data_received``
  (one request at a time per process; the answers to one read leave in one
  ``writelines``), the front awaits the gateway in one task per connection,
  pausing reads while a pipelined backlog is answered in order;
* which headers are kept: the model server compares the four it needs as bytes,
  the front decodes all of them for SigV4 and the gateway;
* the response shapes and reason phrases each one has always sent, and how
  connections arrive (``create_server`` versus an accept loop that hands
  sockets to worker processes and adopts TLS connections).

It imports nothing from sagestack but :mod:`sagestack.sockets`: it sits at the
bottom of the dependency order.
"""

from __future__ import annotations

import asyncio

import httptools

from sagestack.sockets import set_no_delay

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Http1Server:
    """What the connections of one server share: the body limit, the idle timeout and the open connections."""

    def __init__(self, max_body: int, idle_timeout: float) -> None:
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections: set[Http1Connection] = set()

    def sweeping(self) -> bool:
        """False once the server stopped: the sweep then ends."""
        return True

    def sweep_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close keep-alive connections that saw no bytes for one to two idle periods."""
        if not self.sweeping():
            return
        for connection in list(self.connections):
            if not connection.seen and connection.idle():
                connection.close()
            connection.seen = False
        loop.call_later(self.idle_timeout, self.sweep_idle, loop)

    def close_connections(self) -> None:
        for connection in list(self.connections):
            connection.close()


class Http1Connection(asyncio.Protocol):
    """One client connection: the parser callbacks that buffer a request, with hooks for the server's part.

    Subclasses implement ``on_header`` (setting ``declared_length`` and
    ``expect_continue`` from the headers they keep), :meth:`request_complete`,
    :meth:`reject_too_large`, :meth:`rejected_body_read` and :meth:`send`.
    """

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        #: Bytes arrived since the last idle sweep.
        self.seen = True
        self._begin()

    def _begin(self) -> None:
        self.url = b""
        self.parts: list[bytes] = []
        self.size = 0
        self.too_large = False
        #: Content-Length as announced (-1: none or unreadable); set by ``on_header``.
        self.declared_length = -1
        self.expect_continue = False

    # ----------------------------------------------------------------- to implement

    def request_complete(self, body: bytes) -> None:
        """A whole request was read (within ``max_body``): answer it."""
        raise NotImplementedError

    def reject_too_large(self) -> None:
        """The body exceeds ``max_body``: answer 413 now, without closing (the rest is read and dropped)."""
        raise NotImplementedError

    def rejected_body_read(self) -> None:
        """The rest of a too-large body has been read: close once the 413 is out."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Write bytes to the client (a subclass may batch them)."""
        raise NotImplementedError

    def idle(self) -> bool:
        """False while an answer is being worked on: the idle sweep leaves the connection open."""
        return True

    # ----------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        set_no_delay(transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            self.server.connections.discard(self)

    # ----------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._begin()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        if self.declared_length > self.server.max_body:
            self._too_large()
        elif self.expect_continue and self.transport is not None:
            self.send(CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return  # answered already; the rest is read and dropped
        self.size += len(body)
        if self.size > self.server.max_body:  # chunked bodies announce no length
            self._too_large()
        else:
            self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.too_large:
            self.rejected_body_read()
            return
        parts = self.parts
        self.request_complete(parts[0] if len(parts) == 1 else b"".join(parts))

    def _too_large(self) -> None:
        # Answered now, but the connection closes only once the body has been read: closing on unread
        # bytes sends a reset, which can destroy the answer before the client reads it.
        self.too_large = True
        self.reject_too_large()
