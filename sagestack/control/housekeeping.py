"""Periodic platform chores: evaluate CloudWatch alarms, apply log retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sagestack.logic.cloudwatch import evaluate_alarms
from sagestack.logic.logs import expire_events

log = logging.getLogger("sagestack.housekeeping")
ALARM_INTERVAL = 10.0
RETENTION_INTERVAL = 600.0


class Housekeeping:
    def __init__(self, db: Any) -> None:
        self.db = db
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        last_retention = 0.0
        while True:
            await asyncio.sleep(ALARM_INTERVAL)
            try:
                for transition in await asyncio.to_thread(evaluate_alarms, self.db):
                    log.info("alarm %s: %s -> %s", transition.alarm_name, transition.old_state,
                             transition.new_state)
                if time.monotonic() - last_retention > RETENTION_INTERVAL:
                    last_retention = time.monotonic()
                    await asyncio.to_thread(expire_events, self.db)
            except Exception:
                log.exception("housekeeping pass failed")
