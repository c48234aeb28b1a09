"""Run a ``sagestack server`` as a child process on a free loopback port (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from sagestack.cli import env_lines
from sagestack.compute import free_port


class ServerProcess:
    """One server on its own data dir; ``env`` holds what ``sagestack env`` prints."""

    def __init__(self, data_dir: Path, port: int | None = None, tls: bool = False,
                 extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.tls = tls
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    def endpoint_url(self, service: str) -> str:
        """Where boto3 sends ``service``'s calls given ``env``: a service-specific URL wins, as in botocore."""
        specific = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
        return self.env.get(specific) or self.env["AWS_ENDPOINT_URL"]

    def start(self, timeout: float = 60) -> ServerProcess:
        args = [sys.executable, "-m", "sagestack", "server", "--port", str(self.port),
                "--data-dir", str(self.data_dir), *self.extra_args]
        if self.tls:
            args.append("--tls")
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
        self._wait_ready(timeout)
        self.env = dict(_parse_exports(env_lines(self.data_dir)))
        return self

    def _wait_ready(self, timeout: float) -> None:
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://127.0.0.1:{self.port}/_sagestack/health"
        deadline = time.monotonic() + timeout
        context = None
        if self.tls:
            import ssl

            context = ssl._create_unverified_context()
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as response:
                    if response.status == 200 and (self.data_dir / "server.json").exists():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def client(self, service: str, **overrides: Any) -> Any:
        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url(service),
            "aws_access_key_id": self.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": self.env["AWS_SECRET_ACCESS_KEY"],
            "region_name": self.env["AWS_DEFAULT_REGION"],
            "config": Config(retries={"max_attempts": 1, "mode": "standard"}),
        }
        if "AWS_CA_BUNDLE" in self.env:
            kwargs["verify"] = self.env["AWS_CA_BUNDLE"]
        kwargs.update(overrides)
        return boto3.client(service, **kwargs)

    def subprocess_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a child process (AWS CLI, SDK script) that talks to this server."""
        env = _clean_env()
        env.update(self.env)
        env.update(extra or {})
        return env


def _clean_env() -> dict[str, str]:
    """The parent's environment without any AWS settings that could leak into a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def _parse_exports(lines: list[str]) -> list[tuple[str, str]]:
    import shlex

    pairs = []
    for line in lines:
        name, _, value = line.removeprefix("export ").partition("=")
        pairs.append((name, shlex.split(value)[0] if value else ""))
    return pairs
