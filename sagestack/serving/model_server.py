"""The model-server process of one endpoint instance: SageMaker's container contract over HTTP/1.1.

    python -m sagestack.serving.model_server --model-dir DIR [--host 127.0.0.1] [--port 8080] [--unix-socket PATH]

Routes: ``GET /ping`` (200, empty body, once the model is loaded; the model is
loaded before the port opens), ``POST /invocations`` (see ``xgboost_handler``)
and ``GET /execution-parameters`` (for batch transform). Anything else is 404.

When it listens it prints ``sagestack-model-server ready port=P pid=N`` on
stdout; a model that cannot be loaded prints ``sagestack-model-server error:
Unable to load model: ...`` and exits with status 1. Every request answered
with a status >= 400 is logged as one stdout line.

Why a hand-written server instead of Starlette/uvicorn: this process answers
one-row predictions that cost the model ~50 us, so the HTTP layer is most of
the bill. An ``asyncio.Protocol`` fed by ``httptools`` (the parser uvicorn
uses) on uvloop costs a few microseconds per request and nothing per
connection beyond the parser; the ASGI stack adds ~100 us of scope dicts,
coroutines and middleware. Handling is synchronous inside ``data_received``:
the process serves one request at a time by design (one instance = one core),
so there is nothing to await, and responses to pipelined requests leave in
order for free: those of one read go out in one write (the platform's router
pipelines its requests to an instance on one connection).

Environment (SageMaker's names): ``SAGEMAKER_BIND_TO_PORT`` (port when
``--port`` is absent), ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (seconds one request
may run; past it the process exits with status 3 so the platform restarts it,
as gunicorn kills a silent worker), ``MAX_CONTENT_LENGTH`` (bytes; larger
bodies get 413), ``OMP_NUM_THREADS`` (defaults to 1), plus the handler's
``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``, ``SAGEMAKER_INFERENCE_OUTPUT``,
``SAGEMAKER_BATCH`` and ``SAGEMAKER_INFERENCE_ENSEMBLE``.
``SAGEMAKER_MODEL_SERVER_WORKERS`` is ignored: scale with instances.
``SAGESTACK_COMPILE_MODELS`` (default on) and ``SAGESTACK_COMPILED_MODELS_DIR``
control the compiled-trees upgrade of :mod:`sagestack.serving.compiled`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httptools

from sagestack.httpcore import Http1Connection, Http1Server
from sagestack.malloc import keep_freed_memory

if TYPE_CHECKING:
    from sagestack.serving.xgboost_handler import XGBoostHandler

PREFIX = "sagestack-model-server"
TIMEOUT_EXIT_CODE = 3
_REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}
_PING_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_TEXT = "text/plain; charset=utf-8"


def log(message: str) -> None:
    # The platform turns each stdout line into a CloudWatch event: one line per message, flushed now.
    sys.stdout.write(f"{PREFIX} {message}\n")
    sys.stdout.flush()


class ModelServer(Http1Server):
    """Shared state of all connections: the handler, limits and the request watchdog."""

    def __init__(self, handler: XGBoostHandler, max_body: int, timeout: float, idle_timeout: float) -> None:
        super().__init__(max_body, idle_timeout)
        self.handler = handler
        self.timeout = timeout
        #: time.monotonic() when the request being handled started, 0.0 when idle (read by the watchdog).
        self.busy_since = 0.0

    def respond(
        self, method: bytes, path: bytes, body: bytes, content_type: str | None, accept: str | None
    ) -> tuple[int, bytes, str | None]:
        """``(status, body, content type)`` of one complete request."""
        if path == b"/invocations":
            if method != b"POST":
                return 405, b"Method Not Allowed", _TEXT
            self.busy_since = time.monotonic()
            try:
                return self.handler.invoke(body, content_type, accept)
            except Exception as exc:  # a bug, not bad input: answer like the container's Flask would
                return 500, f"Internal error: {type(exc).__name__}: {exc}".encode(), _TEXT
            finally:
                self.busy_since = 0.0
        if path == b"/ping":
            return (200, b"", None) if method in (b"GET", b"HEAD") else (405, b"Method Not Allowed", _TEXT)
        if path == b"/execution-parameters" and method == b"GET":
            return self.handler.execution_parameters()
        return 404, b"{}", "application/json"  # what the container's nginx answers for other paths

    def watch(self) -> None:
        """Thread body: exit the process when one request runs past SAGEMAKER_MODEL_SERVER_TIMEOUT."""
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            started = self.busy_since
            if started and time.monotonic() - started > self.timeout:
                log(
                    f"error: a request ran longer than {self.timeout:g} s "
                    "(SAGEMAKER_MODEL_SERVER_TIMEOUT); exiting"
                )
                os._exit(TIMEOUT_EXIT_CODE)


class HttpConnection(Http1Connection):
    """One client connection: ``ModelServer.respond`` answers synchronously, keep-alive by default."""

    server: ModelServer

    def __init__(self, server: ModelServer) -> None:
        #: Answers waiting to be written at the end of the current ``data_received``.
        self.batch: list[bytes] | None = None
        super().__init__(server)

    def _begin(self) -> None:
        Http1Connection._begin(self)  # not super(): this runs per request, and super() costs ~0.1 us more
        self.content_type: str | None = None
        self.accept: str | None = None

    # ----------------------------------------------------------------- transport events

    def data_received(self, data: bytes) -> None:
        self.seen = True
        # Answers to the requests in this chunk (a pipelining client sends several) leave in one write.
        self.batch = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.transport is not None and not self.too_large:
                self._send(400, f"Bad Request: {exc}".encode(), _TEXT, close=True)
        except Exception as exc:  # an upgrade request or a bug in a callback: never leave the peer hanging
            if self.transport is not None:
                log(f"error: {type(exc).__name__}: {exc}")
                self._send(400, b"Bad Request", _TEXT, close=True)
        finally:
            self._flush()

    def _flush(self) -> None:
        batch, self.batch = self.batch, None
        if batch and self.transport is not None:
            self.transport.writelines(batch)

    def send(self, data: bytes) -> None:
        if self.batch is not None:
            self.batch.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
        super().close()

    # ----------------------------------------------------------------- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value.decode("latin-1")
        elif name == b"accept":
            self.accept = value.decode("latin-1")
        elif name == b"content-length":
            self.declared_length = int(value) if value.strip().isdigit() else -1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def request_complete(self, body: bytes) -> None:
        if self.transport is None:
            return
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if path == b"/ping" and method == b"GET" and self.parser.should_keep_alive():
            self.send(_PING_OK)  # the health check is frequent: skip the general path
            return
        status, payload, content_type = self.server.respond(
            method, path, body, self.content_type, self.accept
        )
        if status >= 400:
            message = payload.decode("utf-8", "replace").replace("\n", "\\n")
            log(f"{method.decode()} {path.decode('latin-1')} {status}: {message}")
        self._send(
            status, payload, content_type, close=not self.parser.should_keep_alive(), head=method == b"HEAD"
        )

    def rejected_body_read(self) -> None:
        self.close()  # the 413 is out and the rest of the body has been read and dropped

    # ----------------------------------------------------------------- responses

    def reject_too_large(self) -> None:
        limit = self.server.max_body
        method, url = self.parser.get_method().decode(), self.url.decode("latin-1")
        log(f"{method} {url} 413: body larger than {limit} bytes")
        self._send(413, f"Request body larger than {limit} bytes".encode(), _TEXT, close=False, last=True)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        close: bool,
        head: bool = False,
        last: bool = False,
    ) -> None:
        """Write one response; ``close`` closes the connection now, ``last`` only announces it."""
        if self.transport is None:
            return
        head_lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode()]
        if content_type:
            head_lines.append(b"Content-Type: %s\r\n" % content_type.encode("latin-1"))
        if status != 204:  # a 204 carries neither body nor length
            head_lines.append(b"Content-Length: %d\r\n" % len(body))
        if close or last:
            head_lines.append(b"Connection: close\r\n")
        head_lines.append(b"\r\n")
        if head or status == 204:
            self.send(b"".join(head_lines))
        elif len(body) < 65536:
            head_lines.append(body)
            self.send(b"".join(head_lines))  # one piece: one segment for small responses
        else:
            self.send(b"".join(head_lines))
            self.send(body)  # no copy of a large body
        if close:
            self.close()


# --------------------------------------------------------------------------- process


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sagestack.serving.model_server", description=__doc__)
    parser.add_argument(
        "--model-dir", required=True, help="directory holding xgboost-model (model.tar.gz unpacked)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=None, help="default: $SAGEMAKER_BIND_TO_PORT or 8080; 0 = any"
    )
    parser.add_argument(
        "--unix-socket", default=None,
        help="also serve on this Unix socket (the platform's router uses it: cheaper than loopback TCP)",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=300.0, help="close keep-alive connections idle this long"
    )
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto", help="event loop")
    return parser.parse_args(argv)


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind != "asyncio":
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:  # plain asyncio works too, a little slower
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop()


async def serve(server: ModelServer, host: str, port: int, on_ready: Callable[[int], None],
                unix_socket: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    listeners = []
    if unix_socket:  # first: once /ping answers on TCP, the router may connect here
        if os.path.exists(unix_socket):
            os.unlink(unix_socket)  # left by a killed predecessor
        listeners.append(await loop.create_unix_server(lambda: HttpConnection(server), unix_socket, backlog=1024))
    listener = await loop.create_server(
        lambda: HttpConnection(server), host, port, backlog=1024, reuse_address=True
    )
    listeners.append(listener)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    loop.call_later(server.idle_timeout, server.sweep_idle, loop)
    on_ready(listener.sockets[0].getsockname()[1])
    await stopped.wait()
    # Requests are handled synchronously, so none is half-done here: stop listening, close, go.
    for each in listeners:
        each.close()
    server.close_connections()
    for each in listeners:
        await each.wait_closed()
    if unix_socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(unix_socket)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # Before xgboost/numpy load their OpenMP runtime: one request at a time needs one thread.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from sagestack.serving import compiled
    from sagestack.serving.xgboost_handler import DEFAULT_MAX_CONTENT_LENGTH, XGBoostHandler

    started = time.monotonic()
    try:
        handler = XGBoostHandler.from_model_dir(args.model_dir, log=log)
    except Exception as exc:
        log(f"error: Unable to load model: {exc}".replace("\n", "\\n"))
        return 1
    log(f"model loaded in {time.monotonic() - started:.2f} s: {handler.model.describe()}")
    env = os.environ
    port = args.port if args.port is not None else int(env.get("SAGEMAKER_BIND_TO_PORT") or 8080)
    server = ModelServer(
        handler,
        max_body=int(env.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_CONTENT_LENGTH),
        timeout=float(env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT") or 60),
        idle_timeout=args.idle_timeout,
    )
    if server.timeout > 0:
        threading.Thread(target=server.watch, name="request-watchdog", daemon=True).start()
    if compiled.enabled(env):
        # Serving starts now with xgboost's predictor; compiled trees replace it when built.
        cache = env.get("SAGESTACK_COMPILED_MODELS_DIR") or os.path.join(args.model_dir, ".compiled")
        compiled.compile_in_background(handler.model, Path(cache), log)

    def ready(bound: int) -> None:
        log(f"ready port={bound} pid={os.getpid()}")

    # Every request allocates and frees its body, decoded text and rows: megabytes for a big one.
    keep_freed_memory(mmap_below=64 << 20, trim_above=256 << 20)
    loop = _new_loop(args.loop)
    try:
        loop.run_until_complete(serve(server, args.host, port, ready, args.unix_socket))
    except OSError as exc:
        log(f"error: cannot listen on {args.host}:{port}: {exc}")
        return 1
    finally:
        loop.close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
