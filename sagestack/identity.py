"""Who may call: the installation's account, the admin key, and access-key lookup for SigV4.

Lookups sit on the hot path of every request, so they are cached briefly; a key
deleted or deactivated through IAM stops working within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import os
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update

from sagestack.arns import iam_arn, resource_arn
from sagestack.db import Database
from sagestack.db.base import utcnow
from sagestack.db.models.identity import AccessKey, IamRole, IamUser, Installation, SessionCredential

CACHE_SECONDS = 2.0
#: Key use (GetAccessKeyLastUsed) is written down at most this often, never once per request.
USE_FLUSH_SECONDS = 5.0
ADMIN_USER = "admin"
_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    account_id: str
    arn: str
    #: AIDA... for a user, ``AROA...:<session>`` for an assumed role.
    user_id: str
    access_key_id: str
    #: "user" or "assumed-role".
    kind: str
    #: The IAM user name, or the role name for an assumed role.
    name: str
    is_admin: bool = False


def random_id(prefix: str, length: int = 16) -> str:
    """AWS-style identifiers: AKIA..., ASIA..., AIDA..., AROA..."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def random_secret() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


@dataclass(frozen=True)
class Credential:
    """What SigV4 needs to check a request, and who it is once it checks out."""

    secret_access_key: str
    principal: Principal
    session_token: str | None = None
    expiration: datetime | None = None
    active: bool = True


class CredentialStore:
    def __init__(self, db: Database, account_id: str) -> None:
        self._db = db
        self.account_id = account_id
        self._cache: dict[str, tuple[float, Credential | None]] = {}
        self._lock = threading.Lock()
        #: access key id -> (when, service, region) of its latest use not yet written.
        self._uses: dict[str, tuple[datetime, str, str]] = {}
        self._next_flush = 0.0
        self._flush_lock = threading.Lock()

    def lookup(self, access_key_id: str) -> Credential | None:
        now = time.monotonic()
        hit = self._cache.get(access_key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        credential = self._load(access_key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()  # bounded memory against random-key floods
            self._cache[access_key_id] = (now + CACHE_SECONDS, credential)
        return credential

    def note_use(self, access_key_id: str, service: str, region: str) -> None:
        """Remember that a long-term key signed a request; a background write records it soon.

        Only the latest use per key matters, so a flood of requests costs one row write per
        key per ``USE_FLUSH_SECONDS``, off the request's thread.
        """
        if not access_key_id.startswith("AKIA"):
            return  # STS session keys are not IAM access keys
        self._uses[access_key_id] = (utcnow(), service, region)
        now = time.monotonic()
        if now >= self._next_flush:
            self._next_flush = now + USE_FLUSH_SECONDS
            threading.Thread(target=self.flush_uses, name="key-use", daemon=True).start()

    def flush_uses(self) -> None:
        """Write down the uses noted so far (returns once they, and any write under way, are stored)."""
        with self._flush_lock:
            uses, self._uses = self._uses, {}
            if not uses:
                return
            with self._db.transaction() as session:
                for key_id, (when, service, region) in list(uses.items()):
                    session.execute(update(AccessKey).where(AccessKey.access_key_id == key_id).values(
                        last_used=when, last_used_service=service, last_used_region=region))

    def invalidate(self, access_key_id: str | None = None) -> None:
        with self._lock:
            if access_key_id is None:
                self._cache.clear()
            else:
                self._cache.pop(access_key_id, None)

    def _load(self, access_key_id: str) -> Credential | None:
        with self._db.session() as session:
            key = session.get(AccessKey, access_key_id)
            if key is not None:
                user = session.get(IamUser, key.user_name)
                if user is None:
                    return None
                return Credential(key.secret_access_key, self.user_principal(user, access_key_id),
                                  active=key.status == "Active")
            temp = session.get(SessionCredential, access_key_id)
            if temp is None:
                return None
            role = session.get(IamRole, temp.role_name)
            role_id = role.role_id if role is not None else "AROA"
            return Credential(
                temp.secret_access_key,
                self.role_session_principal(role_id, temp.role_name, temp.session_name, access_key_id),
                session_token=temp.session_token,
                expiration=temp.expiration,
            )

    def user_principal(self, user: IamUser, access_key_id: str) -> Principal:
        return Principal(
            account_id=self.account_id,
            arn=iam_arn(self.account_id, "user", user.path, user.name),
            user_id=user.user_id,
            access_key_id=access_key_id,
            kind="user",
            name=user.name,
            is_admin=user.is_admin,
        )

    def role_session_principal(self, role_id: str, role_name: str, session_name: str,
                               access_key_id: str) -> Principal:
        return role_session_principal(self.account_id, role_id, role_name, session_name, access_key_id)


def role_session_principal(account_id: str, role_id: str, role_name: str, session_name: str,
                           access_key_id: str = "") -> Principal:
    """Who a session of a role is: ``assumed-role/<role>/<session>``, user id ``<role id>:<session>``."""
    return Principal(
        account_id=account_id,
        arn=resource_arn("sts", "", account_id, f"assumed-role/{role_name}/{session_name}"),
        user_id=f"{role_id}:{session_name}",
        access_key_id=access_key_id,
        kind="assumed-role",
        name=role_name,
    )


def ensure_installation(db: Database) -> str:
    """Create the installation row (and its fixed account id) once; return the account id."""
    with db.transaction() as session:
        row = session.scalar(select(Installation))
        if row is None:
            row = Installation(id=1, account_id="".join(secrets.choice(string.digits[1:]) for _ in range(12)))
            session.add(row)
        return row.account_id


def ensure_admin(db: Database) -> tuple[str, str]:
    """Create the admin user and its access key on first start; return (key id, secret)."""
    with db.transaction() as session:
        # Found by flag, not name: the admin may have been renamed through IAM.
        user = session.scalar(select(IamUser).where(IamUser.is_admin.is_(True)).limit(1))
        if user is None:
            user = IamUser(name=ADMIN_USER, user_id=random_id("AIDA", 17), path="/", is_admin=True)
            session.add(user)
        key = session.scalar(select(AccessKey).where(AccessKey.user_name == user.name,
                                                     AccessKey.status == "Active").limit(1))
        if key is None:
            key = AccessKey(access_key_id=random_id("AKIA"), secret_access_key=random_secret(),
                            user_name=user.name, created=utcnow())
            session.add(key)
        return key.access_key_id, key.secret_access_key


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (credentials, keys): mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_credentials_file(path: Path, access_key_id: str, secret: str, region: str) -> None:
    """The admin key in AWS's shared-credentials format (usable as AWS_SHARED_CREDENTIALS_FILE)."""
    write_private(
        path,
        f"[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n"
        f"region = {region}\n",
    )


def read_credentials_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name.strip()] = value.strip()
    return values
