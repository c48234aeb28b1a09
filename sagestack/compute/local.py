"""The local backend: every instance is a child process of the server.

Children die with the server (PR_SET_PDEATHSIG), so a server killed with -9
leaves no orphan training processes; the reconcilers then settle the state of
what they were doing at the next start. Output is read line by line on a
thread and handed over in batches (log events are cheaper in bulk).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sagestack.compute.zygote import Zygote, ZygoteChild, _die_with_parent

OutputSink = Callable[[list[tuple[int, str]]], None]

_BATCH_SECONDS = 0.2
_BATCH_LINES = 1000


@dataclass
class InstanceSpec:
    #: e.g. "<job>/algo-1": for logs and error messages.
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    on_output: OutputSink | None = None
    #: Run ``python -m <module> <args>`` forked from a warm zygote with these modules preloaded
    #: (and ``warm_env`` set before they load), instead of a fresh interpreter.
    module: str | None = None
    warm: tuple[str, ...] = ()
    warm_env: dict[str, str] = field(default_factory=dict)
    #: Linux SCHED_BATCH: the process keeps its fair share of CPU, but being woken (a request arriving)
    #: never preempts the process that woke it. For model servers, whose router would otherwise lose
    #: its core at every forwarded request when cores are few.
    batch_scheduling: bool = False


class LocalInstance:
    def __init__(self, spec: InstanceSpec, zygote: Zygote | None = None) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | ZygoteChild
        if zygote is not None and spec.module is not None:
            read_fd, write_fd = os.pipe()
            try:
                self.proc = zygote.spawn(spec.module, spec.argv[3:], spec.env, str(spec.cwd), write_fd)
            finally:
                os.close(write_fd)
            self._output = os.fdopen(read_fd, "rb")
        else:
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
            assert self.proc.stdout is not None
            self._output = self.proc.stdout
        if spec.batch_scheduling:
            _use_batch_scheduling(self.proc.pid)
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
        if code is None:
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
        for raw in iter(self._output.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with lock:
                pending.append((int(time.time() * 1000), line))
                full = len(pending) >= _BATCH_LINES
            if full:
                flush()
        done.set()
        timer.join()
        flush()


def _use_batch_scheduling(pid: int) -> None:
    # Allowed for one's own processes without privileges; a no-op where the policy does not exist.
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(pid, policy, os.sched_param(0))


class LocalBackend:
    """Starts instances as local processes. A Ray backend will offer the same calls.

    Specs that name a ``module`` and ``warm`` modules are forked from a zygote
    preloaded with them (one zygote per preload set, started on first use).
    """

    name = "local"

    def __init__(self, warm: bool = True) -> None:
        # Unix socket paths are limited to ~100 bytes: keep them out of deep data dirs.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="sagestack-")) if warm else None
        if self.runtime_dir is not None:  # zygote and model-server sockets; gone with a normal exit
            atexit.register(shutil.rmtree, self.runtime_dir, True)
        self._zygotes: dict[tuple[str, ...], Zygote] = {}
        self._lock = threading.Lock()
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and callers
        # (job runners, reconcile workers) are short-lived threads: every fresh process is
        # started from this one thread instead, which lives as long as the backend.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")

    def start(self, spec: InstanceSpec) -> LocalInstance:
        zygote = self._zygote(spec)
        if zygote is not None:
            return LocalInstance(spec, zygote)  # the zygote watches the server itself
        return self._spawner.submit(LocalInstance, spec, None).result()

    def prewarm(self, module: str, warm: tuple[str, ...], warm_env: dict[str, str]) -> None:
        """Start the zygote for ``warm`` now, so that the first instance starts fast too."""
        probe = InstanceSpec(name="prewarm", argv=[], env={}, cwd=Path("."), module=module, warm=warm,
                             warm_env=warm_env)
        zygote = self._zygote(probe)
        if zygote is not None:
            zygote.ensure()

    def _zygote(self, spec: InstanceSpec) -> Zygote | None:
        if self.runtime_dir is None or spec.module is None or not spec.warm:
            return None
        key = (*spec.warm, *sorted(f"{k}={v}" for k, v in spec.warm_env.items()))
        with self._lock:
            zygote = self._zygotes.get(key)
            if zygote is None:
                env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGESTACK_"))}
                zygote = self._zygotes[key] = Zygote(self.runtime_dir, list(spec.warm), {**env, **spec.warm_env})
            return zygote


def free_port() -> int:
    """A free TCP port on loopback (for instances that serve: model servers, notebooks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
