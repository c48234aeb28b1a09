"""Start the platform: data dir, database, identity, services, then serve HTTP(S)."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import uvicorn
from starlette.routing import Mount

from sagestack import services
from sagestack.app import RootApp, internal_app
from sagestack.authz.authorizer import Authorizer
from sagestack.authz.generation import PolicyGeneration
from sagestack.aws.catalog import ServiceCatalog
from sagestack.aws.gateway import Gateway
from sagestack.config import Settings
from sagestack.control.endpoints import EndpointController
from sagestack.control.housekeeping import Housekeeping
from sagestack.control.notebooks import PROXY_PREFIX, NotebookController
from sagestack.control.routing import table_of
from sagestack.control.training import TrainingController
from sagestack.control.transform import TransformController
from sagestack.control.tuning import TuningController
from sagestack.db import Database
from sagestack.front.pool import RUNTIME_MAX_BODY, RUNTIME_SERVICES, FrontWorkers, default_count
from sagestack.front.server import FrontServer
from sagestack.identity import CredentialStore, ensure_admin, ensure_installation, write_credentials_file
from sagestack.platform import Platform
from sagestack.storage import LocalObjectStore, ObjectStore
from sagestack.storage.external import ExternalObjectStore
from sagestack.tls import ensure_certificate
from sagestack.web.notebook_proxy import NotebookProxy

log = logging.getLogger("sagestack")


def prepare(settings: Settings) -> Platform:
    """Everything that must be true before the first request: idempotent, run at every start."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    db = Database(settings.database_url)
    db.migrate()
    if settings.database_url.startswith("sqlite:///"):
        os.chmod(settings.database_url.removeprefix("sqlite:///"), 0o600)
    account_id = ensure_installation(db)
    key_id, secret = ensure_admin(db)
    write_credentials_file(settings.credentials_file, key_id, secret, settings.region)
    services.load_all()
    for seed in services.seeders():
        seed(db)
    platform = Platform(settings, db, account_id, CredentialStore(db, account_id))
    platform.storage = _object_store(settings, db, account_id)
    platform.server_url = _url(settings)
    platform.authorizer = Authorizer(db, account_id, PolicyGeneration(settings.policy_generation_file),
                                     bucket_policy=platform.storage.bucket_policy, region=settings.region)
    platform.authorizer.watch()
    training = TrainingController(platform)
    ended = training.recover()
    if ended:
        log.warning("%d training job(s) interrupted by the last shutdown were ended", ended)
    platform.training = training
    platform.attach(training)
    endpoints = EndpointController(platform)
    platform.endpoints, platform.router = endpoints, endpoints.router
    platform.attach(endpoints)
    transform = TransformController(platform)
    transform.recover()
    platform.transform = transform
    platform.attach(Housekeeping(db))
    tuning = TuningController(platform, training)
    if tuning.recover():
        log.info("resuming the tuning jobs that were running at the last shutdown")
    platform.tuning = tuning
    platform.attach(tuning)
    notebooks = NotebookController(platform, server_url=_url(settings))
    notebooks.recover()  # instances that were up start again once the event loop runs
    platform.notebooks = notebooks
    platform.attach(notebooks)
    return platform


def _object_store(settings: Settings, db: Database, account_id: str) -> ObjectStore:
    """The embedded store (blobs left by a crash go first), or an external one with --s3-endpoint."""
    if settings.s3_endpoint:
        external = ExternalObjectStore(
            settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.region, account_id,
            settings.objects_dir, verify=str(settings.s3_ca_bundle) if settings.s3_ca_bundle else None,
        )
        external.recover()
        log.info("object store: external, at %s", settings.s3_endpoint)
        return external
    store = LocalObjectStore(db, settings.objects_dir)
    report = store.recover()
    if report.temp_files_removed or report.orphan_blobs_removed:
        log.info("object store recovery: %s", report)
    return store


def build_app(platform: Platform, ssl_context: ssl.SSLContext | None = None,
              tls_files: tuple[Path, Path] | None = None) -> RootApp:
    gateway = Gateway(ServiceCatalog(), platform.credentials, platform, services.lookup,
                      platform.authorizer.authorize)
    settings = platform.settings
    endpoints = platform.endpoints
    notebooks = platform.notebooks
    # The front workers mirror the endpoint controller's live table; the proxy reaches live instances.
    assert isinstance(endpoints, EndpointController) and isinstance(notebooks, NotebookController)
    count = settings.runtime_workers if settings.runtime_workers is not None else default_count()
    fronts = FrontWorkers(settings, platform.account_id, count, lambda: table_of(endpoints.live),
                          endpoints.metrics, tls_files)
    platform.fronts = fronts
    platform.attach(fronts)
    runtime = FrontServer(gateway, RUNTIME_SERVICES, max_body=RUNTIME_MAX_BODY, hand_off=fronts.hand_off)

    async def on_start() -> None:
        settings = platform.settings
        port = await runtime.start(settings.host, settings.runtime_port, ssl_context)
        platform.runtime_url = _url(settings, port)
        await platform.start()
        _record_address(settings, platform.runtime_url)
        log.info("sagestack ready at %s, runtime at %s (data dir %s)", _url(settings), platform.runtime_url,
                 settings.data_dir)

    async def on_stop() -> None:
        platform.settings.address_file.unlink(missing_ok=True)
        await runtime.stop()
        await platform.stop()
        platform.credentials.flush_uses()
        platform.db.dispose()

    proxy = NotebookProxy(notebooks)
    platform.attach(proxy)  # its shutdown() closes the upstream connections
    return RootApp(gateway, internal_app(on_start, on_stop, [Mount(PROXY_PREFIX, app=proxy)]))


def _url(settings: Settings, port: int | None = None) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if settings.tls and host == "127.0.0.1":
        host = "localhost"  # the certificate names localhost; either works for IP SANs
    return f"{settings.scheme}://{host}:{port or settings.port}"


def _record_address(settings: Settings, runtime_url: str) -> None:
    info: dict[str, Any] = {"url": _url(settings), "runtime_url": runtime_url, "pid": os.getpid(),
                            "region": settings.region}
    if settings.tls:
        info["ca_bundle"] = str(settings.tls_dir / "ca.pem") if settings.tls_cert is None else None
    settings.address_file.write_text(json.dumps(info))


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sagestack.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    platform = prepare(settings)
    ssl_kwargs: dict[str, Any] = {}
    ssl_context: ssl.SSLContext | None = None
    tls_files: tuple[Path, Path] | None = None
    if settings.tls:
        if settings.tls_cert and settings.tls_key:
            cert, key = settings.tls_cert, settings.tls_key
        else:
            cert, key, _ca = ensure_certificate(settings.tls_dir, settings.host)
        ssl_kwargs = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        tls_files = (Path(cert), Path(key))
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(str(cert), str(key))
    config = uvicorn.Config(
        build_app(platform, ssl_context, tls_files),
        host=settings.host,
        port=settings.port,
        access_log=False,  # our own access log never prints query strings (presigned secrets)
        lifespan="on",
        log_level="warning",
        timeout_keep_alive=75,
        # An idle keep-alive TLS client that never answers close_notify would otherwise hold a
        # graceful stop for asyncio's 30 s SSL shutdown timeout (unfinished uploads are crash-safe).
        timeout_graceful_shutdown=5,
        server_header=False,
        **ssl_kwargs,
    )
    server = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()
