"""What a handler knows about the request it serves: who, where, on which platform.

Generic over the platform so this library names none: the handler layer above
fixes ``P`` (its ``Platform``); the principal is the identity layer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sagestack.identity import Principal

P = TypeVar("P")


@dataclass
class RequestContext(Generic[P]):
    service: str
    operation: str
    region: str
    request_id: str
    #: The authenticated caller.
    principal: Principal
    platform: P
    #: The caller's User-Agent (SDK identification for compatibility switches).
    user_agent: str = ""
    #: ``time.perf_counter()`` when the gateway took the request (for latency metrics such as OverheadLatency).
    received: float = 0.0

    @property
    def account_id(self) -> str:
        return self.principal.account_id



#: ``handler(ctx, params)``: returns the result dict (or an awaitable of it) in the output shape.
Handler = Callable[[RequestContext[Any], dict[str, Any]], Any]
#: Finds the handler of (service, operation name); None when the operation is not implemented.
HandlerLookup = Callable[[str, str], Handler | None]


@dataclass(frozen=True)
class RequestFacts:
    """What the request itself tells the condition keys: where it came from, how, to which region."""

    source_ip: str = ""
    secure: bool = False
    region: str = ""


#: ``authorize(principal, service, operation, params, facts)``: returns if the call is allowed,
#: raises the service's AccessDenied :class:`~sagestack.aws.errors.AwsError` if not.
Authorize = Callable[[Principal, str, str, dict[str, Any], RequestFacts], None]
