"""What a handler knows about the request it serves: who, where, which platform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagestack.aws import context as aws_context


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    account_id: str
    arn: str
    #: AIDA... for a user, ``AROA...:<session>`` for an assumed role.
    user_id: str
    access_key_id: str
    #: "user" or "assumed-role".
    kind: str
    #: The IAM user name, or the role name for an assumed role.
    name: str
    is_admin: bool = False


#: The gateway's context with this layer's platform (typed as ``Platform`` once that moves here).
RequestContext = aws_context.RequestContext[Any]
