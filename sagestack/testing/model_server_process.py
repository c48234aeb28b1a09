"""A standalone model server (``python -m sagestack.serving.model_server``) for tests and benchmarks."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


class ModelServerProcess:
    """One model server on a free loopback port; its output lines are collected for ``wait_for``."""

    def __init__(self, model_dir: Path, **env: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sagestack.serving.model_server", "--model-dir", str(model_dir), "--port", "0"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = 0

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        """The next output line containing ``needle``; AssertionError if none comes in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} from the model server")

    def ready(self) -> ModelServerProcess:
        line = self.wait_for(" ready ")
        assert line.startswith("sagestack-model-server ready port="), line
        self.port = int(line.split("port=")[1].split()[0])
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
