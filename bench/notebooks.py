"""Notebook instances: how fast they come up, and what an idle one costs in memory.

    .venv/bin/python bench/notebooks.py [--rounds 3]

Starts a real server on a temporary data dir and, for each round, times
CreateNotebookInstance → InService and (after a stop) StartNotebookInstance →
InService, polling DescribeNotebookInstance every 50 ms (the boto3 waiter polls
every 30 s by default, which would hide everything). Then measures the resident
memory (RSS) of an idle instance's process tree: the Jupyter server alone, and
with one idle conda_python3 kernel that has imported nothing. Prints numbers;
the target is InService within 30 s (ideally a few seconds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sagestack.testing.server_process import ServerProcess
from tests.integration.notebook_support import JupyterSession, notebook_role


def _wait(sm: object, name: str, status: str, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        current = sm.describe_notebook_instance(NotebookInstanceName=name)["NotebookInstanceStatus"]
        if current == status:
            return time.monotonic() - started
        if current == "Failed":
            raise RuntimeError(sm.describe_notebook_instance(NotebookInstanceName=name).get("FailureReason"))
        time.sleep(0.05)
    raise TimeoutError(f"{name} not {status} after {timeout}s")


def _tree_rss(server: ServerProcess, name: str) -> tuple[float, int]:
    """MiB of RSS of the Jupyter process of ``name`` and all its descendants, and how many processes."""
    assert server.proc is not None
    marker = str(server.data_dir / "notebooks" / name)
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if "jupyterlab" in child.cmdline() and child.cwd().startswith(marker):
                tree = [child, *child.children(recursive=True)]
                return sum(p.memory_info().rss for p in tree) / 2**20, len(tree)
        except psutil.Error:
            continue
    raise LookupError(f"no Jupyter process for {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            run(server, args.rounds)
        finally:
            server.stop()


def run(server: ServerProcess, rounds: int) -> None:
    sm = server.client("sagemaker")
    role = notebook_role(server)
    creates, starts = [], []
    for index in range(rounds):
        name = f"bench-{index}"
        started = time.monotonic()
        sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role)
        _wait(sm, name, "InService")
        creates.append(time.monotonic() - started)
        sm.stop_notebook_instance(NotebookInstanceName=name)
        _wait(sm, name, "Stopped")
        started = time.monotonic()
        sm.start_notebook_instance(NotebookInstanceName=name)
        _wait(sm, name, "InService")
        starts.append(time.monotonic() - started)
    print(f"CreateNotebookInstance -> InService: median {statistics.median(creates):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in creates)})")
    print(f"StartNotebookInstance  -> InService: median {statistics.median(starts):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in starts)})")

    name = "bench-0"
    time.sleep(2)  # let start-up allocations settle
    rss, count = _tree_rss(server, name)
    print(f"idle instance, Jupyter server only: {rss:.0f} MiB RSS ({count} process)")
    session = JupyterSession(sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"])
    kernel = session.start_kernel("idle.ipynb")
    kernel.execute("pass")
    time.sleep(2)
    rss, count = _tree_rss(server, name)
    print(f"idle instance with one idle conda_python3 kernel: {rss:.0f} MiB RSS ({count} processes)")
    kernel.execute("import sagemaker, pandas, sklearn, xgboost")
    rss, count = _tree_rss(server, name)
    print(f"... after the kernel imported sagemaker, pandas, sklearn, xgboost: {rss:.0f} MiB RSS")
    kernel.close()
    session.close()


if __name__ == "__main__":
    main()
