"""A small Jupyter client that goes through sagestack's notebook proxy: presigned URL, REST, kernel websocket."""

from __future__ import annotations

from typing import Any

from sagestack.testing.notebook_client import CellResult, JupyterSession, Kernel  # noqa: F401  (re-exported)
from tests.integration.training_support import TRUST, unique

LIFECYCLE_ECHO = "sagestack-onstart-marker"


def notebook_role(server: Any) -> str:
    name = unique("AmazonSageMaker-ExecutionRole")
    return server.client("iam").create_role(RoleName=name, Path="/service-role/",
                                            AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]


def wait_in_service(sm: Any, name: str, attempts: int = 30) -> None:
    sm.get_waiter("notebook_instance_in_service").wait(
        NotebookInstanceName=name, WaiterConfig={"Delay": 1, "MaxAttempts": attempts})
