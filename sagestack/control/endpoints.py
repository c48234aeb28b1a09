"""Endpoints: deploy model servers, keep them healthy, route InvokeEndpoint to them.

Desired state is the endpoint row (status, config, per-variant weights and
instance counts); a reconcile pass, run on a worker thread per endpoint,
makes the running processes match it. Live routing tables are in memory and
swapped atomically, so UpdateEndpoint keeps the old configuration serving
until the new one is ready. At start every InService endpoint is deployed
again, so a restarted server serves what it served before.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sagestack.compute import LocalBackend
from sagestack.control.endpoint_metrics import EndpointMetrics
from sagestack.control.model_servers import MODULE as MODEL_SERVER
from sagestack.control.model_servers import (
    WARM,
    WARM_ENV,
    DeployError,
    fetch_model,
    launch_model_server,
    may_write_logs,
    ping,
    role_environment,
)
from sagestack.control.role_sessions import CREDENTIAL_SECONDS, RoleGone, RoleSession
from sagestack.control.routing import DRAIN_SECONDS, Deployment, Instance, Router, Variant
from sagestack.db.base import utcnow
from sagestack.db.models.hosting import Endpoint, EndpointConfig, Model
from sagestack.logic.sagemaker.endpoints import desired_variants
from sagestack.logic.tags import drop_tags
from sagestack.platform import FrontSync, Platform

log = logging.getLogger("sagestack.endpoints")

HEALTH_INTERVAL = 0.5
PING_EVERY = 5.0


class EndpointController:
    def __init__(self, platform: Platform, backend: LocalBackend | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        self.backend = backend or LocalBackend()
        self.root: Path = platform.settings.data_dir / "endpoints"
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="endpoint")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = EndpointMetrics(platform.db)
        self.router = Router(platform.db, platform.account_id, self.metrics)

    @property
    def store(self) -> Any:
        return self.platform.storage

    # ------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._workers.submit(self.backend.prewarm, MODEL_SERVER, WARM, WARM_ENV)
        self._tasks.append(asyncio.create_task(self._monitor()))
        self._tasks.append(asyncio.create_task(self.metrics.run(self._instance_pids)))
        with self.db.session() as session:
            names = [e.name for e in session.query(Endpoint).all()]
        for name in names:
            self.reconcile_soon(name)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for deployment in list(self.live.values()):
            self._stop_deployment(deployment)
        self.live.clear()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def reconcile_soon(self, name: str) -> None:
        self._workers.submit(self._reconcile_logged, name)

    def delete(self, name: str) -> None:
        self.reconcile_soon(name)

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    # ------------------------------------------------------------ reconcile
    def _reconcile_logged(self, name: str) -> None:
        try:
            with self._lock(name):
                self._reconcile(name)
        except Exception:
            log.exception("reconciling endpoint %s failed", name)

    def _reconcile(self, name: str) -> None:
        with self.db.session() as session:
            endpoint = session.get(Endpoint, name)
            if endpoint is None:
                return
            status, config_name, pending = endpoint.status, endpoint.config_name, endpoint.pending_config_name
            variants = [dict(v) for v in endpoint.variants]
        if status == "Deleting":
            self._delete(name)
        elif status == "Updating" and pending:
            self._swap_config(name, pending)
        elif status == "Updating":
            self._resize(name, variants)
        elif status in ("Creating", "InService") and name not in self.live:
            self._create(name, config_name, variants)

    def _create(self, name: str, config_name: str, variants: list[dict[str, Any]]) -> None:
        try:
            deployment = self._deploy(name, config_name, variants)
        except DeployError as exc:
            self._set(name, status="Failed", failure_reason=str(exc))
            return
        self.live[name] = deployment
        self._sync_fronts()  # InService only once every front routes to it
        self._set(name, status="InService", failure_reason=None, variants=_current(variants))

    def _swap_config(self, name: str, config_name: str) -> None:
        with self.db.session() as session:
            config = session.get(EndpointConfig, config_name)
            wanted = desired_variants(config) if config is not None else None
        if wanted is None:
            self._set(name, status="InService", pending_config_name=None,
                      failure_reason=f"The endpoint configuration {config_name} no longer exists.")
            return
        try:
            deployment = self._deploy(name, config_name, wanted)
        except DeployError as exc:
            # The old configuration keeps serving; the failure is reported on the endpoint.
            self._set(name, status="InService", pending_config_name=None, failure_reason=str(exc))
            return
        old = self.live.get(name)
        self.live[name] = deployment
        self._sync_fronts()
        self._set(name, status="InService", config_name=config_name, pending_config_name=None,
                  failure_reason=None, variants=_current(wanted))
        if old is not None:
            self._retire(list(old.all_instances()))
            self._revoke(old)

    def _resize(self, name: str, variants: list[dict[str, Any]]) -> None:
        deployment = self.live.get(name)
        if deployment is None:
            self._set(name, status="Creating")
            with self.db.session() as session:
                config_name = session.get(Endpoint, name).config_name
            self._create(name, config_name, variants)
            return
        try:
            for wanted in variants:
                variant = deployment.variants[wanted["VariantName"]]
                variant.weight = wanted["DesiredWeight"]
                while len(variant.instances) < wanted["DesiredInstanceCount"]:
                    variant.instances.append(self._start_instance(name, variant))
                if len(variant.instances) > wanted["DesiredInstanceCount"]:
                    extra = variant.instances[wanted["DesiredInstanceCount"]:]
                    variant.instances = variant.instances[: wanted["DesiredInstanceCount"]]
                    self._retire(extra)
        except DeployError as exc:
            self._set(name, status="InService", failure_reason=str(exc))
            return
        self._sync_fronts()
        self._set(name, status="InService", failure_reason=None, variants=_current(variants))

    def _delete(self, name: str) -> None:
        deployment = self.live.pop(name, None)
        self._sync_fronts()
        if deployment is not None:
            self._stop_deployment(deployment)
        shutil.rmtree(self.root / name, ignore_errors=True)
        with self.db.transaction() as session:
            endpoint = session.get(Endpoint, name)
            if endpoint is not None:
                drop_tags(session, endpoint.arn)
                session.delete(endpoint)

    def _set(self, name: str, **fields: Any) -> None:
        with self.db.transaction() as session:
            endpoint = session.get(Endpoint, name)
            if endpoint is None:
                return
            for key, value in fields.items():
                setattr(endpoint, key, value)
            endpoint.last_modified = utcnow()

    # ------------------------------------------------------------ deployment
    def _deploy(self, name: str, config_name: str, variants: list[dict[str, Any]]) -> Deployment:
        deployment = Deployment(name, config_name, {})
        try:
            for wanted in variants:
                variant = self._prepare_variant(name, config_name, wanted)
                deployment.variants[variant.name] = variant
                variant.instances = self._start_instances(name, variant, wanted["DesiredInstanceCount"])
        except BaseException:
            self._stop_deployment(deployment)
            raise
        return deployment

    def _prepare_variant(self, endpoint: str, config_name: str, wanted: dict[str, Any]) -> Variant:
        with self.db.session() as session:
            model = session.get(Model, wanted["ModelName"])
            if model is None:
                raise DeployError(f"Could not find model \"{wanted['ModelName']}\" of variant "
                                  f"{wanted['VariantName']}.")
            container = model.request.get("PrimaryContainer") or model.request["Containers"][0]
            role = model.request.get("ExecutionRoleArn")
        if not role:
            raise DeployError(f"The model {wanted['ModelName']} has no ExecutionRoleArn: its model data is read "
                              "as that role.")
        model_dir = self.root / endpoint / f"{config_name}-{wanted['VariantName']}" / "model"
        # The model data is read as the model's execution role, as SageMaker does.
        fetch_model(self.platform.storage_as(role), container["ModelDataUrl"], model_dir)
        writes_logs = may_write_logs(self.platform, role, _log_group(endpoint))
        session = RoleSession(self.db, role, model_dir.parent / ".credentials", CREDENTIAL_SECONDS,
                              self.platform.region)
        try:
            session.issue()
        except RoleGone as gone:
            raise DeployError(f"ClientError: {gone}") from None
        return Variant(wanted["VariantName"], wanted["ModelName"], model_dir,
                       dict(container.get("Environment") or {}), wanted["DesiredWeight"],
                       writes_logs=writes_logs, role=session)

    def _start_instances(self, endpoint: str, variant: Variant, count: int) -> list[Instance]:
        started = [self._launch(endpoint, variant) for _ in range(count)]
        try:
            for instance in started:
                self._await_ready(instance, endpoint)
        except DeployError:
            for instance in started:
                self._stop_instance(instance)
            raise
        return started

    def _start_instance(self, endpoint: str, variant: Variant) -> Instance:
        instance = self._launch(endpoint, variant)
        try:
            self._await_ready(instance, endpoint)
        except DeployError:
            self._stop_instance(instance)
            raise
        return instance

    def _launch(self, endpoint: str, variant: Variant) -> Instance:
        instance_id = "i-" + secrets.token_hex(8)
        server = launch_model_server(
            self.backend, self.db, variant.model_dir, variant.env,
            log_group=_log_group(endpoint) if variant.writes_logs else None, log_stream=f"{variant.name}/{instance_id}",
            data_dir=self.platform.settings.data_dir,
            extra_env={"SAGEMAKER_ENDPOINT_NAME": endpoint, "SAGEMAKER_VARIANT_NAME": variant.name,
                       **role_environment(self.platform, variant.role)},
        )
        return Instance(instance_id, variant.name, server)

    def _await_ready(self, instance: Instance, endpoint: str) -> None:
        try:
            instance.server.await_ready()
        except DeployError as exc:
            raise DeployError(f"The primary container for production variant {instance.variant} did not pass the "
                              f"ping health check: {exc} Please check CloudWatch logs for this endpoint "
                              f"(/aws/sagemaker/Endpoints/{endpoint}).") from exc
        instance.healthy = True

    def _stop_instance(self, instance: Instance) -> None:
        instance.healthy = False
        instance.server.stop()

    def _retire(self, instances: list[Instance]) -> None:
        """Stop instances no longer routed to once the requests they hold are answered (or DRAIN_SECONDS)."""
        for instance in instances:
            instance.healthy = False  # a request that listed it before the switch moves on to another
        self._sync_fronts()  # and every front worker answered what it had sent them
        deadline = time.monotonic() + DRAIN_SECONDS
        while any(i.in_flight for i in instances) and time.monotonic() < deadline:
            time.sleep(0.01)
        for instance in instances:
            self._stop_instance(instance)

    def _stop_deployment(self, deployment: Deployment) -> None:
        for instance in deployment.all_instances():
            self._stop_instance(instance)
        self._revoke(deployment)

    def _revoke(self, deployment: Deployment) -> None:
        """The role sessions of a deployment's instances end with them."""
        for variant in deployment.variants.values():
            if variant.role is not None:
                variant.role.revoke(self.platform.credentials)

    # ------------------------------------------------------------ front workers (front/pool.py)
    def _sync_fronts(self) -> None:
        """From a reconcile thread: return once every front worker routes by the current table."""
        fronts = self._fronts()
        if fronts is not None:
            fronts.sync()

    async def _publish_to_fronts(self) -> None:
        """Health changes (and workers that started late) reach the front workers within a monitor tick."""
        fronts = self._fronts()
        if fronts is not None:
            await fronts.publish()

    def _fronts(self) -> FrontSync | None:
        """The front workers, started once there is an endpoint to route to (None without them)."""
        fronts = self.platform.fronts
        if fronts is not None and self.live:
            fronts.start_soon()
        return fronts

    def _instance_pids(self) -> dict[tuple[str, str], list[int]]:
        pids: dict[tuple[str, str], list[int]] = {}
        for name, deployment in list(self.live.items()):
            for variant in deployment.variants.values():
                pids[(name, variant.name)] = [i.server.process.pid for i in variant.instances if i.healthy]
        return pids

    # ------------------------------------------------------------ health
    async def _monitor(self) -> None:
        last_ping = 0.0
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            await self._publish_to_fronts()
            probe = time.monotonic() - last_ping >= PING_EVERY
            if probe:
                last_ping = time.monotonic()
            for name, deployment in list(self.live.items()):
                for variant in deployment.variants.values():
                    for instance in list(variant.instances):
                        await self._check(name, variant, instance, probe)
                    if variant.role is not None and variant.role.due():
                        await asyncio.to_thread(self._renew, name, variant)

    @staticmethod
    def _renew(endpoint: str, variant: Variant) -> None:
        try:
            variant.role.issue()
        except RoleGone as gone:  # its instances keep serving; their calls to AWS fail as the role's would
            log.warning("endpoint %s variant %s: credentials not renewed: %s", endpoint, variant.name, gone)

    async def _check(self, endpoint: str, variant: Variant, instance: Instance, probe: bool) -> None:
        if instance.replacing:
            return
        dead = instance.server.process.poll() is not None
        if not dead and probe:
            ok = await asyncio.to_thread(ping, instance.server.port, 2.0)
            instance.ping_failures = 0 if ok else instance.ping_failures + 1
            dead = instance.ping_failures >= 3
        if dead:
            instance.healthy = False
            instance.replacing = True
            self._workers.submit(self._replace, endpoint, variant, instance)

    def _replace(self, endpoint: str, variant: Variant, instance: Instance) -> None:
        """Health checks failed: start a new instance, then retire the old one."""
        log.warning("endpoint %s: replacing unhealthy instance %s", endpoint, instance.instance_id)
        try:
            fresh = self._start_instance(endpoint, variant)
        except DeployError as exc:
            log.error("endpoint %s: replacement failed: %s", endpoint, exc)
            instance.replacing = False
            return
        variant.instances = [fresh if i is instance else i for i in variant.instances]
        self._sync_fronts()
        self._stop_instance(instance)

    # ------------------------------------------------------------ routing
    @property
    def live(self) -> dict[str, Deployment]:
        return self.router.live


def _current(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Variant records once running: current weights and counts caught up with the desired ones."""
    return [{**v, "CurrentWeight": v["DesiredWeight"], "CurrentInstanceCount": v["DesiredInstanceCount"]}
            for v in variants]


def _log_group(endpoint: str) -> str:
    return f"/aws/sagemaker/Endpoints/{endpoint}"
