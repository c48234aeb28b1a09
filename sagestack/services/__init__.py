"""AWS services, one module (or package) each: typed handlers, no protocol code.

A handler is ``def op(ctx: RequestContext, params: dict) -> dict | None`` (or
``async def``), registered with :func:`operation`. ``params`` is the request
already parsed and validated against the operation's input shape (botocore's
member names, Python types: str, int, float, bool, bytes, datetime, list, dict);
the returned dict follows the output shape and the protocol layer serializes it.
Handlers raise :class:`sagestack.aws.errors.AwsError` for anything a client
should see.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from sagestack.services.context import Principal, RequestContext

__all__ = ["Handler", "Principal", "RequestContext", "lookup", "operation", "seeder", "seeders"]

Handler = Callable[[RequestContext, dict[str, Any]], Any]

_HANDLERS: dict[tuple[str, str], Handler] = {}
_SEEDERS: list[Callable[[Any], None]] = []

#: Modules that register handlers; imported once by :func:`load_all`.
SERVICE_MODULES = [
    "sagestack.services.sts",
    "sagestack.services.iam",
    "sagestack.services.logs",
    "sagestack.services.cloudwatch",
    "sagestack.services.s3",
    "sagestack.services.sagemaker",
    "sagestack.services.sagemaker_runtime",
]


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def operation(service: str, name: str | None = None) -> Callable[[Handler], Handler]:
    """Register a handler for ``service`` (botocore's name, e.g. "sagemaker").

    The operation name defaults to the function name in CamelCase
    (``create_training_job`` -> ``CreateTrainingJob``).
    """

    def register(func: Handler) -> Handler:
        op_name = name or _camel(func.__name__)
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", op_name):
            raise ValueError(f"bad operation name {op_name!r}")
        _HANDLERS[(service, op_name)] = func
        return func

    return register


def lookup(service: str, op_name: str) -> Handler | None:
    return _HANDLERS.get((service, op_name))


def seeder(func: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``func(db)`` to run at every start (idempotent seeding of built-in data)."""
    _SEEDERS.append(func)
    return func


def seeders() -> list[Callable[[Any], None]]:
    return list(_SEEDERS)


def load_all() -> None:
    for module in SERVICE_MODULES:
        importlib.import_module(module)
