"""The root ASGI application: the platform's own pages under ``/_sagestack``, AWS for the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sagestack import __version__
from sagestack.aws.gateway import Gateway

INTERNAL_PREFIX = "/_sagestack"


async def health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


def internal_app(on_start: Callable[[], Any], on_stop: Callable[[], Any],
                 routes: Sequence[BaseRoute] = ()) -> Starlette:
    """Health, plus the platform's own routes (``routes``, e.g. the notebook proxy's mount)."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await on_start()
        try:
            yield
        finally:
            await on_stop()

    return Starlette(routes=[Route(f"{INTERNAL_PREFIX}/health", health), *routes], lifespan=lifespan)


class RootApp:
    """Sends lifespan and ``/_sagestack/*`` to Starlette, every other request to the AWS gateway."""

    def __init__(self, gateway: Gateway, internal: Starlette) -> None:
        self.gateway = gateway
        self.internal = internal

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(INTERNAL_PREFIX + "/"):
            await self.internal(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)
