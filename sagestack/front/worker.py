"""A front worker: one more process serving the runtime port (see :mod:`sagestack.front.pool`).

    python -m sagestack.front.worker --channel-fd FD

Started by the main server process, never by hand: FD is its end of the channel
to the main process. It runs the same gateway (SigV4, parsing, validation,
AWS-shaped errors) and router as the main process's runtime front, over client
connections the main process accepted and handed over, and over a copy of the
routing table the main process keeps current. It reads credentials from the
server's database and sends its invocation counters back every second. It exits
when the main process says so or is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from sagestack import services
from sagestack.authz.authorizer import Authorizer
from sagestack.authz.generation import PolicyGeneration
from sagestack.aws.catalog import ServiceCatalog
from sagestack.aws.gateway import Gateway
from sagestack.config import Settings
from sagestack.control.endpoint_metrics import EndpointMetrics
from sagestack.control.routing import Router, TableMirror
from sagestack.db import Database
from sagestack.front.channel import Channel
from sagestack.front.pool import RUNTIME_MAX_BODY, RUNTIME_SERVICES
from sagestack.front.server import FrontServer
from sagestack.identity import CredentialStore
from sagestack.malloc import keep_freed_memory
from sagestack.platform import Platform
from sagestack.services import sagemaker_runtime  # noqa: F401  (registers InvokeEndpoint's handler)

log = logging.getLogger("sagestack.front.worker")

METRICS_EVERY = 1.0


class FrontWorker:
    def __init__(self, channel_socket: socket.socket) -> None:
        self.stopped = asyncio.Event()
        self.channel = Channel(channel_socket, self._on_message, self.stopped.set)
        self.front: FrontServer | None = None
        self.mirror: TableMirror | None = None
        self.metrics = EndpointMetrics(db=None)
        self._tables: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: dict[str, Callable[[dict[str, Any], list[int]], None]] = {
            "config": self._configure, "table": self._queue_table, "conn": self._serve, "stop": self._stop,
        }

    def _on_message(self, message: dict[str, Any], fds: list[int]) -> None:
        handler = self._handlers.get(message.get("t", ""))
        if handler is None:
            log.warning("front worker: unknown message %r", message.get("t"))
            return
        handler(message, fds)

    def _configure(self, config: dict[str, Any], _fds: list[int]) -> None:
        settings = Settings(data_dir=config["data_dir"], db_url=config["database_url"], region=config["region"])
        db = Database(settings.database_url)
        credentials = CredentialStore(db, config["account_id"])
        router = Router(db, config["account_id"], self.metrics)
        self.mirror = TableMirror(router)
        platform = Platform(settings, db, config["account_id"], credentials)
        platform.router = router
        # Decides alone: it reads the policies from the same database, and the main process's
        # changes reach its caches through the shared policy generation.
        platform.authorizer = Authorizer(db, config["account_id"], PolicyGeneration(settings.policy_generation_file),
                                         region=settings.region)
        gateway = Gateway(ServiceCatalog(), credentials, platform, services.lookup, platform.authorizer.authorize)
        self.front = FrontServer(gateway, RUNTIME_SERVICES, max_body=RUNTIME_MAX_BODY)
        self.front.attach(_ssl_context(config.get("tls")))
        self._tasks.append(asyncio.create_task(self._apply_tables()))
        self._tasks.append(asyncio.create_task(self._send_metrics()))
        self.channel.send({"t": "ready"})

    def _queue_table(self, message: dict[str, Any], _fds: list[int]) -> None:
        self._tables.put_nowait(message)

    async def _apply_tables(self) -> None:
        """In order: route by each table, then say so once the instances it dropped answered our requests."""
        assert self.mirror is not None
        while True:
            message = await self._tables.get()
            gone = self.mirror.apply(message["endpoints"])
            await self.mirror.drain(gone)
            self.mirror.release(gone)
            self.channel.send({"t": "applied", "v": message["v"]})

    async def _send_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_EVERY)
            rows = self.metrics.take_rows()
            if rows:
                self.channel.send({"t": "metrics", "rows": rows})

    def _serve(self, _message: dict[str, Any], fds: list[int]) -> None:
        for fd in fds:
            connection = socket.socket(fileno=fd)
            if self.front is None:
                connection.close()
            else:
                self.front.serve(connection)

    def _stop(self, _message: dict[str, Any], _fds: list[int]) -> None:
        self.stopped.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.front is not None:
            await self.front.stop()
        if self.mirror is not None:
            self.mirror.close()
        self.channel.close()


def _ssl_context(files: list[str] | None) -> ssl.SSLContext | None:
    if not files:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files[0], files[1])
    return context


async def _run(fd: int) -> None:
    worker = FrontWorker(socket.socket(fileno=fd))
    try:
        await worker.stopped.wait()
    finally:
        await worker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagestack.front.worker", description=__doc__)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C in the server's terminal reaches this process too; the main process stops it in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A big InvokeEndpoint is read, joined and forwarded as a few copies of its body (up to 8 MiB each).
    keep_freed_memory(mmap_below=4 * RUNTIME_MAX_BODY, trim_above=16 * RUNTIME_MAX_BODY)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_run(args.channel_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
