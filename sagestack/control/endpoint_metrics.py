"""Endpoint metrics, published once a minute like SageMaker's.

Invocation counters and latencies are accumulated in memory on the request
path (a dict update) and flushed on a timer into CloudWatch:
``AWS/SageMaker`` (Invocations, InvocationsPerInstance, ModelLatency and
OverheadLatency in microseconds, Invocation4XXErrors, Invocation5XXErrors,
InvocationModelErrors) and ``/aws/sagemaker/Endpoints`` (CPUUtilization and
MemoryUtilization of the instances), dimensions EndpointName and VariantName.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from sagestack.logic.cloudwatch import put_datapoints

INTERVAL = float(os.environ.get("SAGESTACK_METRICS_INTERVAL", "60"))


@dataclass
class _Counters:
    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_errors: int = 0
    latency_sum: float = 0.0
    overhead_sum: float = 0.0


class EndpointMetrics:
    def __init__(self, db: Any) -> None:
        self.db = db
        self._counters: dict[tuple[str, str], _Counters] = {}

    def record(self, endpoint: str, variant: str, status: int, seconds: float, overhead: float = 0.0) -> None:
        """One invocation: the model's latency and the platform's own (both in seconds)."""
        counters = self._counters.get((endpoint, variant))
        if counters is None:
            counters = self._counters[(endpoint, variant)] = _Counters()
        counters.invocations += 1
        counters.latency_sum += seconds
        counters.overhead_sum += max(overhead, 0.0)
        if 400 <= status < 500:
            counters.errors_4xx += 1
            counters.model_errors += 1
        elif status >= 500:
            counters.errors_5xx += 1
            counters.model_errors += 1

    def take_rows(self) -> list[list[Any]]:
        """The counters since the last call as JSON-ready rows: a front worker's share, sent to the main process."""
        snapshot, self._counters = self._counters, {}
        return [[endpoint, variant, *astuple(counters)] for (endpoint, variant), counters in snapshot.items()]

    def merge_rows(self, rows: list[list[Any]]) -> None:
        """Add the rows another process took (see :meth:`take_rows`) into this minute's counters."""
        for endpoint, variant, *values in rows:
            mine = astuple(self._counters.get((endpoint, variant)) or _Counters())
            self._counters[(endpoint, variant)] = _Counters(*(a + b for a, b in zip(mine, values, strict=True)))

    async def run(self, pids: Callable[[], dict[tuple[str, str], list[int]]]) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            snapshot, self._counters = self._counters, {}
            await asyncio.to_thread(self.flush, snapshot, pids())

    def flush(self, snapshot: dict[tuple[str, str], _Counters], pids: dict[tuple[str, str], list[int]]) -> None:
        now = datetime.now(UTC)
        for (endpoint, variant), counters in snapshot.items():
            dims = {"EndpointName": endpoint, "VariantName": variant}
            instances = max(1, len(pids.get((endpoint, variant), [])))
            count = counters.invocations or 1
            latency_us = counters.latency_sum / count * 1e6
            overhead_us = counters.overhead_sum / count * 1e6
            values = {
                "Invocations": counters.invocations,
                "InvocationsPerInstance": counters.invocations / instances,
                "ModelLatency": latency_us,
                "OverheadLatency": overhead_us,
                "Invocation4XXErrors": counters.errors_4xx,
                "Invocation5XXErrors": counters.errors_5xx,
                "InvocationModelErrors": counters.model_errors,
            }
            for metric, value in values.items():
                put_datapoints(self.db, "AWS/SageMaker", metric, dims, [(now, float(value))])
        for (endpoint, variant), processes in pids.items():
            cpu, memory = _usage(processes)
            dims = {"EndpointName": endpoint, "VariantName": variant}
            put_datapoints(self.db, "/aws/sagemaker/Endpoints", "CPUUtilization", dims, [(now, cpu)])
            put_datapoints(self.db, "/aws/sagemaker/Endpoints", "MemoryUtilization", dims, [(now, memory)])


def _usage(pids: list[int]) -> tuple[float, float]:
    """CPU (sum of cores, 100 = one core, as SageMaker reports) and memory percent of the instances."""
    cpu = memory = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            cpu += process.cpu_percent(interval=None)
            memory += process.memory_percent()
        except psutil.Error:
            continue
    return cpu, memory
