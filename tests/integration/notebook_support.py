"""A small Jupyter client that goes through sagestack's notebook proxy: presigned URL, REST, kernel websocket."""

from __future__ import annotations

from typing import Any

from sagestack.testing.notebook_client import CellResult, JupyterSession, Kernel  # noqa: F401  (re-exported)
from sagestack.testing.roles import execution_role

LIFECYCLE_ECHO = "sagestack-onstart-marker"


def notebook_role(server: Any, buckets: list[str] | None = None) -> str:
    """The console's role for a notebook instance: SageMaker and S3 (``buckets``; None: any bucket)."""
    return execution_role(server.client("iam"), buckets)


def wait_in_service(sm: Any, name: str, attempts: int = 30) -> None:
    sm.get_waiter("notebook_instance_in_service").wait(
        NotebookInstanceName=name, WaiterConfig={"Delay": 1, "MaxAttempts": attempts})
