"""What a handler knows about the request it serves: who, where, on which platform.

Generic over the platform so this library names none: the handler layer above
fixes ``P`` (its ``Platform``) and the identity layer owns the principal's and
the credential store's types; what the gateway needs of them is written here
as protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

P = TypeVar("P")


@dataclass
class RequestContext(Generic[P]):
    service: str
    operation: str
    region: str
    request_id: str
    #: The authenticated caller (the identity layer's ``Principal``: ``account_id``, ``arn``, ...).
    principal: Any
    platform: P
    #: The caller's User-Agent (SDK identification for compatibility switches).
    user_agent: str = ""
    #: ``time.perf_counter()`` when the gateway took the request (for latency metrics such as OverheadLatency).
    received: float = 0.0

    @property
    def account_id(self) -> str:
        account: str = self.principal.account_id
        return account

    def arn(self, service: str, resource: str, region: str | None = None) -> str:
        """An ARN in this installation's account, e.g. arn(\"sagemaker\", \"training-job/x\")."""
        reg = self.region if region is None else region
        return f"arn:aws:{service}:{reg}:{self.account_id}:{resource}"


#: ``handler(ctx, params)``: returns the result dict (or an awaitable of it) in the output shape.
Handler = Callable[[RequestContext[Any], dict[str, Any]], Any]
#: Finds the handler of (service, operation name); None when the operation is not implemented.
HandlerLookup = Callable[[str, str], Handler | None]


class SigningCredential(Protocol):
    """What SigV4 needs to check a request, and who made it once it checks out."""

    @property
    def secret_access_key(self) -> str: ...
    @property
    def principal(self) -> Any: ...
    @property
    def session_token(self) -> str | None: ...
    @property
    def expiration(self) -> datetime | None: ...
    @property
    def active(self) -> bool: ...


class CredentialSource(Protocol):
    def lookup(self, access_key_id: str) -> SigningCredential | None:
        """The credential of an access key id; None for keys nobody issued."""
        ...
