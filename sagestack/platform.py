"""The running platform: every long-lived part a handler may reach through ctx.platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sagestack.config import Settings
from sagestack.db import Database
from sagestack.identity import CredentialStore


@dataclass
class Platform:
    settings: Settings
    db: Database
    account_id: str
    credentials: CredentialStore
    #: Further parts (object store, compute backend, reconcilers) attach here by name
    #: as they are started; see sagestack/server.py.
    parts: dict[str, Any] = field(default_factory=dict)
    #: The sagemaker-runtime endpoint's URL, known once its port is bound (before ``start``).
    runtime_url: str | None = None

    async def start(self) -> None:
        """Start every part that runs on the event loop (health monitors, metric flushers)."""
        for part in self.parts.values():
            startup = getattr(part, "startup", None)
            if startup is not None:
                await startup()

    async def stop(self) -> None:
        for part in reversed(list(self.parts.values())):
            shutdown = getattr(part, "shutdown", None)
            if shutdown is not None:
                await shutdown()

    @property
    def region(self) -> str:
        return self.settings.region
