"""Open a page in headless Chromium (Debian's package) and report what rendered and what failed.

``tools/install_browser.sh`` installs Chromium where it is missing (CI runs it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
]


@dataclass
class Rendered:
    dom: str
    console: str

    @property
    def js_errors(self) -> list[str]:
        return [line for line in self.console.splitlines()
                if "Uncaught" in line or ("CONSOLE" in line and "error" in line.lower())]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: run tools/install_browser.sh (make test does)")
    return path


def render(url_or_path: str | Path) -> Rendered:
    target = url_or_path if isinstance(url_or_path, str) else Path(url_or_path).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", target],
            capture_output=True, text=True, timeout=120,
        )
    return Rendered(done.stdout, done.stderr)
