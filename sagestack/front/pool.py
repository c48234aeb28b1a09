"""Front workers: more processes serving the runtime port, so InvokeEndpoint routing uses more than one core.

One Python process routes a few thousand one-row predictions a second (SigV4,
parsing, the hop to the model server), and on a busy machine that process, not
the model servers, is what saturates. The main process therefore accepts every
runtime connection itself and hands them out in turn, over a Unix socket, to
itself and to ``count`` front workers (:mod:`sagestack.front.worker`): the same
gateway and router code in another process, reading credentials from the same
database. Connections are balanced one by one, which SO_REUSEPORT's hashing of a
few keep-alive connections would not do.

The main process stays the owner of everything else:

- the routing table: each worker routes over a copy, replaced by every change
  the endpoint controller makes. :meth:`FrontWorkers.sync` returns once every
  worker applied the newest copy and answered what it had sent to instances
  that left it, so an endpoint is InService only once every front knows it, and
  a retired instance stops only once no front still uses it;
- metrics: workers send their counters every second; the main process adds them
  to its own before the minute's flush;
- health: a worker that stops answering is left out, killed and started again.

Workers start with the first endpoint (until then there is nothing to route).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagestack.config import Settings
from sagestack.control.endpoint_metrics import EndpointMetrics
from sagestack.control.routing import DRAIN_SECONDS
from sagestack.front.channel import Channel

log = logging.getLogger("sagestack.fronts")

#: What the runtime port serves; its bodies may be a little over InvokeEndpoint's 6 MB payload limit,
#: so that limit is reported in SageMaker's words (a ValidationError) rather than as an HTTP 413.
RUNTIME_SERVICES = frozenset({"sagemaker-runtime"})
RUNTIME_MAX_BODY = 8 * 1024 * 1024
MODULE = "sagestack.front.worker"
#: A worker must have applied a table this long after it was sent (draining included), or it is replaced.
SYNC_TIMEOUT = DRAIN_SECONDS + 10.0
#: A worker that ended is started again after this, doubled for each one that ends before serving.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0


def default_count() -> int:
    """One worker per core beyond the first, at most three: routing is rarely worth more."""
    return max(0, min(os.cpu_count() or 1, 4) - 1)


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    #: The newest table version it applied; -1 until its first.
    applied: int = -1
    ready: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    channel: Channel = field(init=False)


class FrontWorkers:
    """The main process's side: start, feed, balance over and replace the front workers."""

    def __init__(self, settings: Settings, account_id: str, count: int, table: Callable[[], dict[str, Any]],
                 metrics: EndpointMetrics, tls_files: tuple[Path, Path] | None = None) -> None:
        self.settings = settings
        self.account_id = account_id
        self.count = count
        self._table = table
        self.metrics = metrics
        self.tls_files = tls_files
        self._workers: list[_Worker] = []
        #: Workers in the rotation, in turn with the main process (turn 0).
        self._serving: list[_Worker] = []
        self._turn = 0
        self._version = 0
        self._published: dict[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopping = False
        self._failed_starts = 0

    # ------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def shutdown(self) -> None:
        self._stopping = True
        for worker in list(self._workers):
            worker.channel.send({"t": "stop"})
        deadline = time.monotonic() + 3.0
        while any(w.process.poll() is None for w in self._workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for worker in list(self._workers):
            if worker.process.poll() is None:
                worker.process.kill()
            worker.channel.close()

    def start_soon(self) -> None:
        """Start the workers if they are not running yet; safe from any thread."""
        if self.count <= 0 or self._started or self._loop is None:
            return
        self._started = True
        self._loop.call_soon_threadsafe(self._start_all)

    def _start_all(self) -> None:
        for _ in range(self.count):
            self._spawn()

    def _spawn(self) -> None:
        if self._stopping:
            return
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                process = subprocess.Popen(
                    [sys.executable, "-m", MODULE, "--channel-fd", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                )
        except OSError as exc:  # out of processes or memory: the main process serves alone meanwhile
            mine.close()
            log.error("cannot start a front worker: %s", exc)
            return
        worker = _Worker(process)
        worker.channel = Channel(mine, functools.partial(self._on_message, worker),
                                 functools.partial(self._on_close, worker))
        self._workers.append(worker)
        worker.channel.send({"t": "config", **self._config()})

    def _config(self) -> dict[str, Any]:
        # Through the channel, not argv or the environment: a database URL may hold a password.
        settings = self.settings
        return {"database_url": settings.database_url, "data_dir": str(settings.data_dir),
                "region": settings.region, "account_id": self.account_id,
                "tls": [str(p) for p in self.tls_files] if self.tls_files else None}

    # ------------------------------------------------------------ messages
    def _on_message(self, worker: _Worker, message: dict[str, Any], fds: list[int]) -> None:
        for fd in fds:  # workers send no descriptors
            os.close(fd)
        kind = message.get("t")
        if kind == "ready":
            self._send_table(worker, self._current_table())
        elif kind == "applied":
            worker.applied = int(message["v"])
            if not worker.ready and worker.applied >= self._version:  # joins with the newest table only
                worker.ready = True
                self._failed_starts = 0
                self._serving.append(worker)
                log.info("front worker %d serving the runtime port", worker.process.pid)
            worker.changed.set()
        elif kind == "metrics":
            self.metrics.merge_rows(message["rows"])

    def _on_close(self, worker: _Worker) -> None:
        if worker in self._serving:
            self._serving.remove(worker)
        if worker in self._workers:
            self._workers.remove(worker)
        worker.changed.set()
        if worker.process.poll() is None:
            worker.process.kill()
        asyncio.get_running_loop().run_in_executor(None, worker.process.wait)
        if not self._stopping:
            if not worker.ready:
                self._failed_starts += 1
            delay = min(RESTART_DELAY * 2 ** self._failed_starts, MAX_RESTART_DELAY)
            log.warning("front worker %d ended; starting another in %.0f s", worker.process.pid, delay)
            asyncio.get_running_loop().call_later(delay, self._spawn)

    # ------------------------------------------------------------ balancing
    def hand_off(self, connection: socket.socket) -> bool:
        """The accept hook of the main process's front: True when a worker took ``connection``."""
        turns = len(self._serving) + 1
        if turns == 1:
            return False
        self._turn = (self._turn + 1) % turns
        if self._turn == 0:
            return False  # the main process's own turn
        return self._serving[self._turn - 1].channel.send({"t": "conn"}, [connection.fileno()])

    # ------------------------------------------------------------ the routing table
    def _current_table(self) -> dict[str, Any]:
        table = self._table()
        if table != self._published:
            self._version += 1
            self._published = table
        return table

    def _send_table(self, worker: _Worker, table: dict[str, Any]) -> None:
        worker.channel.send({"t": "table", "v": self._version, "endpoints": table})

    async def publish(self) -> int:
        """Send the table to every worker if it changed; returns its version."""
        previous = self._version
        table = self._current_table()
        if self._version != previous:
            for worker in list(self._workers):
                self._send_table(worker, table)
        return self._version

    async def publish_and_wait(self) -> None:
        version = await self.publish()
        deadline = time.monotonic() + SYNC_TIMEOUT
        for worker in list(self._serving):
            while worker.applied < version and worker in self._serving:
                worker.changed.clear()
                remaining = deadline - time.monotonic()
                try:
                    await asyncio.wait_for(worker.changed.wait(), max(remaining, 0.0))
                except TimeoutError:
                    log.error("front worker %d did not apply the routing table in %.0f s; replacing it",
                              worker.process.pid, SYNC_TIMEOUT)
                    worker.channel.close()
                    break

    def sync(self) -> None:
        """From a reconcile thread: return once every serving worker routes by the current table.

        Never raises: a worker that cannot keep up is replaced, and the controller's own
        state change (InService, an instance stopped) goes ahead either way."""
        loop = self._loop
        if not self._workers or loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.publish_and_wait(), loop)
        try:
            future.result(SYNC_TIMEOUT + 5.0)
        except Exception:  # the loop stopping under us (shutdown), or a bug: log, never block the controller
            future.cancel()
            log.exception("publishing the routing table to the front workers failed")

