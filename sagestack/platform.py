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

    @property
    def region(self) -> str:
        return self.settings.region
