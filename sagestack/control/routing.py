"""The runtime router: which instance answers an InvokeEndpoint, and the table it decides from.

The endpoint controller owns the model-server processes and keeps the live
table (endpoint → variants → instances). Every front that serves the runtime
port routes with a :class:`Router` over such a table: the main process over the
controller's own objects, each front worker (:mod:`sagestack.front.worker`) over
a mirror rebuilt from :func:`table_of` snapshots the main process sends it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sagestack.aws.errors import AwsError
from sagestack.control.endpoint_metrics import EndpointMetrics
from sagestack.db.models.hosting import Endpoint
from sagestack.serving.upstream import UpstreamError, UpstreamPool

#: How long a retired instance (an update's old configuration, a scale-in) may finish its requests.
DRAIN_SECONDS = 30.0


class Upstream(Protocol):
    """What routing needs of a model server: the connection to it."""

    pool: UpstreamPool


@dataclass
class Instance:
    instance_id: str
    variant: str
    server: Upstream
    healthy: bool = False
    ping_failures: int = 0
    replacing: bool = False
    #: Requests forwarded and not answered yet (changed on the event loop only).
    in_flight: int = 0


@dataclass
class Variant:
    name: str
    model_name: str
    model_dir: Path
    env: dict[str, str]
    weight: float
    instances: list[Instance] = field(default_factory=list)
    #: Whether its instances' output goes to CloudWatch Logs (the model's role may write there).
    writes_logs: bool = True
    #: The STS sessions of the model's role its instances hold (a ``role_sessions.RoleSession``).
    role: Any = None
    _next: int = 0

    def pick(self) -> Iterator[Instance]:
        """Healthy instances, starting one further each time so consecutive requests spread over them
        (lazily: the first one nearly always answers)."""
        instances = tuple(self.instances)  # the monitor may replace instances while a request retries
        count = len(instances)
        self._next = start = (self._next + 1) % count if count else 0
        for offset in range(count):
            instance = instances[(start + offset) % count]
            if instance.healthy:
                yield instance


@dataclass
class Deployment:
    endpoint: str
    config_name: str
    variants: dict[str, Variant]

    def all_instances(self) -> list[Instance]:
        return [i for v in self.variants.values() for i in v.instances]


class Router:
    """Chooses a variant by weight and an instance in turn; retries a failed instance on the next one."""

    def __init__(self, db: Any, account_id: str, metrics: EndpointMetrics) -> None:
        self.db = db
        self.account_id = account_id
        self.metrics = metrics
        self.live: dict[str, Deployment] = {}

    async def invoke(self, name: str, body: bytes, headers: dict[str, str],
                     target_variant: str | None, received: float | None = None) -> tuple[str, Any]:
        """Forward to an instance of the chosen variant; ``received`` (perf_counter) is when the request
        arrived, so OverheadLatency can count routing, authentication and parsing too."""
        deployment = self.live.get(name)
        if deployment is None:
            raise await self._not_serving(name)
        variant = self._choose_variant(deployment, target_variant)
        arrived = received if received is not None else time.perf_counter()
        for instance in variant.pick():
            instance.in_flight += 1
            asked = time.perf_counter()
            try:
                response = await instance.server.pool.request("POST", "/invocations", headers, body)
            except UpstreamError:
                instance.healthy = False  # the monitor replaces it; this request moves on
                continue
            finally:
                instance.in_flight -= 1
            answered = time.perf_counter()
            # ModelLatency: the instance's answer; OverheadLatency: everything else, failed tries included.
            model = answered - asked
            self.metrics.record(name, variant.name, response.status, model, answered - arrived - model)
            return variant.name, response
        self.metrics.record(name, variant.name, 503, 0.0, time.perf_counter() - arrived)
        raise AwsError("ServiceUnavailable", f"No healthy instance of variant {variant.name} is available to "
                                             "serve the request. Try your call again.", 503)

    def _choose_variant(self, deployment: Deployment, target: str | None) -> Variant:
        if target is not None:
            variant = deployment.variants.get(target)
            if variant is None:
                raise AwsError("ValidationError", f"The variant {target} does not exist in endpoint "
                                                  f"{deployment.endpoint}.", 400)
            return variant
        candidates = [v for v in deployment.variants.values() if v.weight > 0] or list(deployment.variants.values())
        if len(candidates) == 1:
            return candidates[0]
        return random.choices(candidates, weights=[v.weight or 1.0 for v in candidates])[0]

    async def _not_serving(self, name: str) -> AwsError:
        def status() -> str | None:
            with self.db.session() as session:
                endpoint = session.get(Endpoint, name)
                return None if endpoint is None else endpoint.status

        current = await asyncio.to_thread(status)
        if current is None:
            return AwsError("ValidationError", f"Endpoint {name} of account {self.account_id} not found.", 400)
        return AwsError("ValidationError", f"Endpoint {name} is not in service (status {current}).", 400)


# --------------------------------------------------------------------------- the table between processes


def table_of(live: dict[str, Deployment]) -> dict[str, Any]:
    """A JSON-ready copy of the routing table: what another front needs to route exactly alike."""
    endpoints: dict[str, Any] = {}
    for name, deployment in list(live.items()):
        endpoints[name] = {
            "config": deployment.config_name,
            "variants": [
                {"name": v.name, "model": v.model_name, "weight": v.weight,
                 "instances": [_instance_entry(i) for i in list(v.instances)]}
                for v in list(deployment.variants.values())
            ],
        }
    return endpoints


def _instance_entry(instance: Instance) -> dict[str, Any]:
    pool = instance.server.pool
    return {"id": instance.instance_id, "healthy": instance.healthy, "host": pool.host, "port": pool.port,
            "socket": pool.unix_socket, "timeout": pool.timeout}


@dataclass
class RemoteServer:
    """A model server another process started: this process only holds a connection to it."""

    pool: UpstreamPool


class TableMirror:
    """A front worker's copy of the main process's table, with its own connections to the instances."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._instances: dict[str, Instance] = {}

    def apply(self, endpoints: dict[str, Any]) -> list[Instance]:
        """Route by ``endpoints`` from now on; returns the instances no longer routed to (to drain)."""
        seen: dict[str, Instance] = {}
        live: dict[str, Deployment] = {}
        for name, entry in endpoints.items():
            variants = {}
            for v in entry["variants"]:
                variant = Variant(v["name"], v["model"], Path(), {}, float(v["weight"]))
                variant.instances = [self._instance(i, v["name"], seen) for i in v["instances"]]
                variants[variant.name] = variant
            live[name] = Deployment(name, entry["config"], variants)
        self.router.live = live  # one assignment: a request sees the old table or the new one
        gone = [i for key, i in self._instances.items() if key not in seen]
        gone += [i for i in seen.values() if not i.healthy]
        self._instances = seen
        return gone

    async def drain(self, instances: list[Instance]) -> None:
        """Wait until ``instances`` answered what this process forwarded to them (or DRAIN_SECONDS)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while any(i.in_flight for i in instances) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def release(self, instances: list[Instance]) -> None:
        """Close the connections of those of ``instances`` the table no longer has."""
        for instance in instances:
            if instance.instance_id not in self._instances:
                instance.server.pool.close()

    def _instance(self, entry: dict[str, Any], variant: str, seen: dict[str, Instance]) -> Instance:
        instance = self._instances.get(entry["id"])
        if instance is None:
            pool = UpstreamPool(entry["host"], entry["port"], timeout=entry["timeout"],
                                unix_socket=entry["socket"])
            instance = Instance(entry["id"], variant, RemoteServer(pool))
        instance.healthy = bool(entry["healthy"])
        seen[instance.instance_id] = instance
        return instance

    def close(self) -> None:
        for instance in self._instances.values():
            instance.server.pool.close()
        self._instances = {}
