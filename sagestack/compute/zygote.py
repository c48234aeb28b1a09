"""A warm fork server: instances start in milliseconds instead of paying Python's imports.

Importing xgboost, numpy and pandas costs 0.5–3 s per process on this kind of
machine, more than a whole tutorial training job. The zygote imports them once
(with the environment the algorithms need set *before* the native libraries
load) and forks a fresh child per instance: the child gets its own session,
working directory, environment and stdout/stderr (the platform's pipe, passed
over the Unix socket), then runs the instance's module as ``__main__``.

Protocol, one connection per instance: the client sends one JSON line
``{"module", "argv", "env", "cwd"}`` with the output pipe attached
(SCM_RIGHTS); the zygote answers ``{"pid": N}`` and later ``{"exit": code}``
(negative: killed by that signal). The zygote dies with the server
(PR_SET_PDEATHSIG); its children die with it the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import runpy
import signal
import socket
import sys
import threading
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in a child before exec (or after fork): SIGKILL when the parent goes away."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# ---------------------------------------------------------------- zygote process


def _child(request: dict, out_fd: int) -> None:
    """In the forked child: become the instance, then run its module. Never returns."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sys.argv = [request["module"], *request.get("argv", [])]
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _serve_one(conn: socket.socket) -> None:
    message, fds, _flags, _addr = socket.recv_fds(conn, 65536, 1)
    buffer = message
    while not buffer.endswith(b"\n"):
        more = conn.recv(65536)
        if not more:
            return
        buffer += more
    request = json.loads(buffer)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(request, fds[0])
    os.close(fds[0])
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
    conn.close()


def _exit_with_server(server_pid: int) -> None:
    """PR_SET_PDEATHSIG follows the *thread* that started us, which may end long before the
    server does; so the zygote watches the server process itself."""
    while os.getppid() == server_pid:
        threading.Event().wait(1.0)
    os._exit(0)


def serve(socket_path: str, preload: list[str]) -> None:
    threading.Thread(target=_exit_with_server, args=(os.getppid(),), daemon=True).start()
    for module in preload:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    print("zygote ready", flush=True)
    while True:
        conn, _ = listener.accept()
        # One waiter thread per instance; forking happens on it, and the child runs no threads.
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------- client side (in the server)


class ZygoteChild:
    """A process forked by the zygote, with the Popen-like calls LocalInstance needs."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._file = conn.makefile("rb")
        self.pid = int(json.loads(self._file.readline())["pid"])
        self.returncode: int | None = None
        self._done = threading.Event()
        threading.Thread(target=self._await_exit, daemon=True).start()

    def _await_exit(self) -> None:
        try:
            line = self._file.readline()
            self.returncode = int(json.loads(line)["exit"]) if line else -9
        except (OSError, ValueError, KeyError):
            self.returncode = -9
        finally:
            self._done.set()
            with contextlib.suppress(OSError):
                self._file.close()
                self._conn.close()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.poll()


class Zygote:
    """Starts (lazily) and talks to one zygote process preloaded with ``preload`` modules."""

    def __init__(self, socket_dir: Path, preload: list[str], env: dict[str, str]) -> None:
        self.socket_path = str(socket_dir / f"zygote-{os.getpid()}-{abs(hash(tuple(preload)))}.sock")
        self.preload = preload
        self.env = env
        self._proc: object | None = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        import subprocess

        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:  # type: ignore[attr-defined]
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            # Not "-m": the package would import this module before running it as __main__.
            code = "import sys; from sagestack.compute.zygote import serve; serve(sys.argv[1], sys.argv[2:])"
            argv = [sys.executable, "-c", code, self.socket_path, *self.preload]
            started = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            assert started.stdout is not None
            if started.stdout.readline().strip() != b"zygote ready":
                raise RuntimeError("the zygote failed to start")
            self._proc = started

    def spawn(self, module: str, argv: list[str], env: dict[str, str], cwd: str, out_fd: int) -> ZygoteChild:
        self.ensure()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.socket_path)
        payload = json.dumps({"module": module, "argv": argv, "env": env, "cwd": cwd}).encode() + b"\n"
        socket.send_fds(conn, [payload], [out_fd])
        return ZygoteChild(conn)

