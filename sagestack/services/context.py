"""What a handler knows about the request it serves: who, where, which platform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sagestack.identity import Principal

if TYPE_CHECKING:
    from sagestack.platform import Platform

__all__ = ["Principal", "RequestContext"]


@dataclass
class RequestContext:
    service: str
    operation: str
    region: str
    request_id: str
    principal: Principal
    platform: Platform
    #: The caller's User-Agent (SDK identification for compatibility switches).
    user_agent: str = ""
    #: ``time.perf_counter()`` when the gateway took the request (for latency metrics such as OverheadLatency).
    received: float = 0.0

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    def arn(self, service: str, resource: str, region: str | None = None) -> str:
        """An ARN in this installation's account, e.g. arn(\"sagemaker\", \"training-job/x\")."""
        reg = self.region if region is None else region
        return f"arn:aws:{service}:{reg}:{self.account_id}:{resource}"
