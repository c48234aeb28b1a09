"""Server settings and the layout of the data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
DEFAULT_REGION = "us-east-1"


def default_data_dir() -> Path:
    return Path(os.environ.get("SAGESTACK_DATA_DIR", ".sagestack"))


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: The sagemaker-runtime port (the lean front of ``front/server.py``); 0 = any free port.
    runtime_port: int = 0
    #: Front worker processes serving the runtime port next to the main one; None = one per extra core
    #: (at most 3), 0 = the main process alone (see front/pool.py).
    runtime_workers: int | None = None
    #: SQLAlchemy URL; None means SQLite in the data dir.
    db_url: str | None = None
    region: str = DEFAULT_REGION
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: External mode: keep buckets and objects in this S3-compatible endpoint instead of the data dir.
    s3_endpoint: str | None = None
    #: Its credentials; None falls back to boto3's usual chain (AWS_ACCESS_KEY_ID...).
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    #: CA bundle to verify an HTTPS endpoint with (default: the system's).
    s3_ca_bundle: Path | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    # --- data-dir layout (see docs/architecture.md) ---
    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'sagestack.db'}"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def policy_generation_file(self) -> Path:
        """The counter every process of the server reads to know its authorization caches are current."""
        return self.data_dir / "policy-generation"

    @property
    def address_file(self) -> Path:
        """Where a running server records its URL, so `sagestack env` finds it."""
        return self.data_dir / "server.json"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"
