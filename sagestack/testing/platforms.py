"""A real Platform without controllers, for unit tests that call handlers and logic in-process."""

from __future__ import annotations

from pathlib import Path

from sagestack.arns import iam_arn
from sagestack.authz.authorizer import Authorizer
from sagestack.authz.generation import PolicyGeneration
from sagestack.config import Settings
from sagestack.db import Database
from sagestack.identity import CredentialStore, Principal
from sagestack.platform import Platform
from sagestack.storage import LocalObjectStore

ACCOUNT_ID = "123456789012"


def bare_platform(data_dir: Path, account_id: str = ACCOUNT_ID) -> Platform:
    """The database (migrated), credentials and object store of a data dir; no controller is attached,
    so a handler that would wake one raises AttributeError instead of doing half its work."""
    settings = Settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    db.migrate()
    platform = Platform(settings, db, account_id, CredentialStore(db, account_id))
    platform.storage = LocalObjectStore(db, settings.objects_dir)
    platform.authorizer = Authorizer(db, account_id, PolicyGeneration(), bucket_policy=platform.storage.bucket_policy,
                                     region=settings.region)
    platform.authorizer.watch()
    return platform


def admin_principal(account_id: str = ACCOUNT_ID) -> Principal:
    return Principal(account_id, iam_arn(account_id, "user", "/", "admin"), "AIDATEST", "AKIATEST", "user", "admin",
                     is_admin=True)
