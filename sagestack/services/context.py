"""What a handler knows about the request it serves: who, where, which platform."""

from __future__ import annotations

from sagestack.aws import context as aws_context
from sagestack.identity import Principal
from sagestack.platform import Platform

__all__ = ["Principal", "RequestContext"]

#: The gateway's context, on this server's platform: ``ctx.platform.training`` and the rest are typed.
RequestContext = aws_context.RequestContext[Platform]
