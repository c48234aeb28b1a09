"""STS sessions of an execution role for the processes of one piece of work (a notebook, a job).

The process's AWS SDKs find the credentials through ``credential_process`` in an AWS config file
of the work's own, which reads a 0600 JSON file that :meth:`RoleSession.issue` rewrites. The SDKs
call it again when the credentials they hold get close to expiry, so a renewal before then (half
the lifetime left, checked by the owner's loop) reaches a running process without a restart.
When the work ends, :meth:`RoleSession.revoke` deletes its sessions: their keys stop working.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete

from sagestack.authz.role_store import SESSION_NAME
from sagestack.db import Database
from sagestack.db.base import utcnow
from sagestack.db.models.identity import IamRole, SessionCredential
from sagestack.identity import CredentialStore, random_id, random_secret, write_private

CONFIG_FILE, CREDENTIALS_FILE = "aws-config", "credentials.json"
#: Length of the sessions work gets; renewed when half is left (the SDKs re-read credential_process
#: credentials before they expire, so a running process picks the new one up).
CREDENTIAL_SECONDS = int(os.environ.get("SAGESTACK_JOB_CREDENTIAL_SECONDS", "3600"))


class RoleGone(Exception):
    """The role no longer exists: the work cannot have its credentials."""


class RoleSession:
    """The credentials of ``role_arn`` for one piece of work, kept in ``directory`` (owner-only)."""

    def __init__(self, db: Database, role_arn: str, directory: Path, seconds: int, region: str) -> None:
        self.db, self.role_arn, self.directory = db, role_arn, directory
        self.seconds, self.region = seconds, region
        self.keys: list[str] = []
        self.expiry: datetime | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / CONFIG_FILE

    def environment(self) -> dict[str, str]:
        """What points a process's SDKs at these credentials, and at nothing else."""
        return {
            "AWS_CONFIG_FILE": str(self.config_file),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.directory / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def issue(self) -> str:
        """A fresh session, written where ``credential_process`` reads it; returns its access key id."""
        role_name = self.role_arn.rsplit("/", 1)[-1]
        now = utcnow()
        with self.db.transaction() as session:
            role = session.get(IamRole, role_name)
            if role is None:
                raise RoleGone(f"the role {self.role_arn} no longer exists.")
            credential = SessionCredential(
                access_key_id=random_id("ASIA"), secret_access_key=random_secret(),
                session_token=base64.b64encode(secrets.token_bytes(192)).decode(), role_name=role_name,
                session_name=SESSION_NAME, created=now,
                expiration=now + timedelta(seconds=min(self.seconds, role.max_session_duration)),
            )
            session.add(credential)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.directory / CREDENTIALS_FILE, json.dumps({
            "Version": 1, "AccessKeyId": credential.access_key_id, "SecretAccessKey": credential.secret_access_key,
            "SessionToken": credential.session_token, "Expiration": credential.expiration.isoformat(),
        }))
        if not self.config_file.exists():
            cat = shutil.which("cat") or "/bin/cat"
            reader = f"{shlex.quote(cat)} {shlex.quote(str(self.directory / CREDENTIALS_FILE))}"
            write_private(self.config_file, f"[default]\nregion = {self.region}\ncredential_process = {reader}\n")
        self.keys.append(credential.access_key_id)
        self.expiry = credential.expiration
        return credential.access_key_id

    def due(self) -> bool:
        """Half the session's lifetime is gone: time to issue the next one."""
        return self.expiry is not None and self.expiry - utcnow() < timedelta(seconds=self.seconds / 2)

    def revoke(self, credentials: CredentialStore | None = None) -> None:
        """Every session this work was given stops working now (not at its expiry)."""
        keys, self.keys = self.keys, []
        if keys:
            with self.db.transaction() as session:
                session.execute(delete(SessionCredential).where(SessionCredential.access_key_id.in_(keys)))
        if credentials is not None:
            for key in keys:
                credentials.invalidate(key)
