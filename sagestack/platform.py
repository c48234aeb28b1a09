"""The running platform: every long-lived part a handler or controller may reach, by name and type.

Handlers (``services/``) and controllers (``control/``) never import each other, yet a
handler must tell a controller that there is work (a job submitted, an endpoint to
deploy). So the platform names each controller by what handlers may ask of it: the
``*Runner`` protocols below. ``server.py`` builds the real parts and attaches them;
an editor follows ``ctx.platform.training.submit`` to :class:`TrainingRunner`, and
from there to ``control/training.py``'s ``TrainingController`` which implements it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sagestack.authz.authorizer import Authorizer
from sagestack.authz.role_store import RoleScopedStore, role_session
from sagestack.aws.errors import AwsError
from sagestack.config import Settings
from sagestack.db import Database
from sagestack.identity import CredentialStore
from sagestack.storage import ObjectStore


class TrainingRunner(Protocol):
    """Runs training jobs (``control/training.py``)."""

    def check_inputs(self, request: dict[str, Any]) -> None: ...
    def submit(self, name: str) -> None: ...
    def stop(self, name: str, reason: str | None = None) -> None: ...


class TransformRunner(Protocol):
    """Runs batch transform jobs (``control/transform.py``)."""

    def check_inputs(self, request: dict[str, Any]) -> None: ...
    def submit(self, name: str) -> None: ...
    def stop(self, name: str) -> None: ...


class TuningRunner(Protocol):
    """Runs hyperparameter tuning jobs (``control/tuning.py``)."""

    def submit(self, name: str, request: dict[str, Any]) -> None: ...
    def wake(self) -> None: ...


class EndpointDeployer(Protocol):
    """Deploys endpoints (``control/endpoints.py``)."""

    def reconcile_soon(self, name: str) -> None: ...
    def delete(self, name: str) -> None: ...


class InvocationRouter(Protocol):
    """Forwards InvokeEndpoint to an instance (``control/routing.py``; in every front process)."""

    async def invoke(self, name: str, body: bytes, headers: dict[str, str], target_variant: str | None,
                     received: float | None = None) -> tuple[str, Any]: ...


class NotebookRunner(Protocol):
    """Runs notebook instances (``control/notebooks.py``)."""

    def launch(self, name: str) -> None: ...
    def stop(self, name: str) -> None: ...
    def delete(self, name: str) -> None: ...
    def url_of(self, name: str) -> str: ...
    def presigned_url(self, name: str, created: datetime, session_seconds: int) -> str: ...


class FrontSync(Protocol):
    """The runtime port's front workers (``front/pool.py``), as the endpoint controller drives them."""

    def start_soon(self) -> None: ...
    def sync(self) -> None: ...
    async def publish(self) -> int: ...


class Platform:
    """The parts of one running server. The members below are attached by ``server.py`` (a front
    worker's platform has only ``router``)."""

    storage: ObjectStore
    #: Decides every request the gateway serves, and what work running as a role may touch.
    authorizer: Authorizer
    router: InvocationRouter
    training: TrainingRunner
    transform: TransformRunner
    tuning: TuningRunner
    endpoints: EndpointDeployer
    notebooks: NotebookRunner
    #: None until the runtime port is built (and in processes without one).
    fronts: FrontSync | None = None
    #: The sagemaker-runtime endpoint's URL, known once its port is bound (before ``start``).
    runtime_url: str | None = None
    #: The main port's URL, which the platform's processes (kernels, jobs) call AWS APIs at.
    server_url: str | None = None

    def __init__(self, settings: Settings, db: Database, account_id: str, credentials: CredentialStore) -> None:
        self.settings = settings
        self.db = db
        self.account_id = account_id
        self.credentials = credentials
        #: Parts with an event-loop life (``startup``/``shutdown``), in the order they were attached.
        self._running: list[Any] = []

    def attach(self, part: Any) -> None:
        """Give a part an event-loop life: started by :meth:`start`, stopped in reverse by :meth:`stop`."""
        self._running.append(part)

    async def start(self) -> None:
        """Start every part that runs on the event loop (health monitors, metric flushers)."""
        for part in self._running:
            startup = getattr(part, "startup", None)
            if startup is not None:
                await startup()

    async def stop(self) -> None:
        for part in reversed(self._running):
            shutdown = getattr(part, "shutdown", None)
            if shutdown is not None:
                await shutdown()

    def storage_as(self, role_arn: str) -> RoleScopedStore:
        """The object store as a session of ``role_arn`` may use it (a job's downloads and uploads)."""
        principal = role_session(self.db, self.account_id, role_arn)
        return RoleScopedStore(self.storage, self.authorizer, principal)

    def role_may(self, role_arn: str, action: str, resource: str, context: dict[str, str] | None = None) -> bool:
        """Whether a session of ``role_arn`` may do ``action``: what the platform does for a role's work
        (writing its logs and metrics) it does only when the role itself could."""
        try:
            self.authorizer.require(role_session(self.db, self.account_id, role_arn), action, resource, context)
        except AwsError:
            return False
        return True

    @property
    def region(self) -> str:
        return self.settings.region
