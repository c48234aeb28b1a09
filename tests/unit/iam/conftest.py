"""Fixtures of the IAM unit tests: a temporary database with the admin user, its context, the built-in policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import sagestack.services.iam  # noqa: F401  (registers the handlers)
from sagestack.db.base import Base, Database, sqlite_url
from sagestack.db.models.identity import IamUser
from sagestack.services import RequestContext
from sagestack.services.iam import seed_managed_policies
from tests.unit.iam.support import ADMIN, make_ctx


@pytest.fixture
def database(tmp_path: Any) -> Iterator[Database]:
    db = Database(sqlite_url(tmp_path / "iam.db"))
    Base.metadata.create_all(db.engine)
    with db.transaction() as session:
        session.add(IamUser(name="admin", user_id=ADMIN.user_id, path="/", is_admin=True))
    yield db
    db.dispose()


@pytest.fixture
def ctx(database: Database) -> RequestContext:
    return make_ctx(database, ADMIN)


@pytest.fixture
def seeded(database: Database) -> Database:
    seed_managed_policies(database)
    return database
