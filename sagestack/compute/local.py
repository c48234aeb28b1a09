"""The local backend: every instance is a child process of the server.

Children die with the server (PR_SET_PDEATHSIG), so a server killed with -9
leaves no orphan training processes; the reconcilers then settle the state of
what they were doing at the next start. Output is read line by line on a
thread and handed over in batches (log events are cheaper in bulk).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OutputSink = Callable[[list[tuple[int, str]]], None]

_PR_SET_PDEATHSIG = 1
_BATCH_SECONDS = 0.2
_BATCH_LINES = 1000


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL when the server goes away."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class InstanceSpec:
    #: e.g. "<job>/algo-1": for logs and error messages.
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    on_output: OutputSink | None = None
    extra: dict[str, str] = field(default_factory=dict)


class LocalInstance:
    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec
        self.proc = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only a prctl call between fork and exec
            start_new_session=True,  # its own process group: stop() reaches grandchildren too
        )
        self._pump = threading.Thread(target=self._read_output, name=f"out:{spec.name}", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._pump.join(timeout=5)  # every line is delivered before the exit is reported
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _read_output(self) -> None:
        """Collect lines; a flusher hands them over at least every 0.2 s, even if output stalls."""
        assert self.proc.stdout is not None
        pending: list[tuple[int, str]] = []
        lock = threading.Lock()
        done = threading.Event()

        def flush() -> None:
            with lock:
                batch = pending[:]
                pending.clear()
            if batch and self.spec.on_output is not None:
                self.spec.on_output(batch)

        def flusher() -> None:
            while not done.wait(_BATCH_SECONDS):
                flush()

        timer = threading.Thread(target=flusher, name=f"flush:{self.spec.name}", daemon=True)
        timer.start()
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with lock:
                pending.append((int(time.time() * 1000), line))
                full = len(pending) >= _BATCH_LINES
            if full:
                flush()
        done.set()
        timer.join()
        flush()


class LocalBackend:
    """Starts instances as local processes. A Ray backend will offer the same two calls."""

    name = "local"

    def start(self, spec: InstanceSpec) -> LocalInstance:
        return LocalInstance(spec)
