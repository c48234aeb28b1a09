"""AWS managed policies that exist out of the box (arn:aws:iam::aws:policy/...).

The documents are AWS's own, kept as data: one file per policy in
``sagestack/authz/managed/<PolicyName>.json``, holding ``PolicyName``, ``Path``,
``Description``, ``DefaultVersionId`` and ``Document`` (the default version's
document, exactly as AWS's GetPolicyVersion returns it).

Where they come from: MAMIP, now IAMTrail (https://github.com/zoph-io/IAMTrail,
formerly github.com/z0ph/MAMIP), which records AWS's answers for every AWS managed
policy: ``policies/<PolicyName>`` (GetPolicyVersion of the default version) and
``policies-list.json`` (ListPolicies: path, default version id). The descriptions
are AWS's (ListPolicies / GetPolicy; the AWS Managed Policy Reference shows them too).
The files in this tree were taken from IAMTrail's commit of 2026-08-22.

To refresh them, or add one: ``git clone --depth 1 https://github.com/zoph-io/IAMTrail
/tmp/iamtrail`` then ``python tools/update_managed_policies.py /tmp/iamtrail [Name ...]
[--description TEXT]``, and commit the changed files. Every file is checked with
:func:`sagestack.authz.policy.parse_policy` when this module loads.

:func:`seed_managed_policies` runs at every start: it adds missing policies and,
when a document here changed, stores it as a new default version (as AWS does when
it updates one). Version ids are AWS's: the seeded default version is the one AWS
reports (e.g. AmazonSageMakerFullAccess v29), not v1.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagestack.authz.policy import PolicyError, parse_policy
from sagestack.db import Database
from sagestack.db.models.identity import ManagedPolicy, PolicyVersion
from sagestack.services import seeder
from sagestack.services.iam.common import AWS_POLICY_PREFIX
from sagestack.services.iam.policies import MAX_VERSIONS, add_version, make_default, new_policy, versions_of

_VERSION_RE = re.compile(r"v([1-9][0-9]*)")
_PATH_RE = re.compile(r"/(?:[\x21-\x7e]+/)?")


@dataclass(frozen=True)
class BuiltinPolicy:
    name: str
    description: str
    #: The default version's document, pretty-printed like the ones AWS returns.
    document: str
    path: str = "/"
    #: The id AWS gives the default version (``v<n>``).
    version_id: str = "v1"

    @property
    def arn(self) -> str:
        return f"{AWS_POLICY_PREFIX}{self.path}{self.name}"

    @property
    def version_number(self) -> int:
        return int(self.version_id[1:])

    @classmethod
    def from_data(cls, data: dict[str, Any], origin: str = "<data>") -> BuiltinPolicy:
        """One data file's content; raises ValueError when it is not a valid entry."""
        try:
            name, path = data["PolicyName"], data["Path"]
            description, version_id, document = data["Description"], data["DefaultVersionId"], data["Document"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{origin}: missing {exc}") from None
        if not (isinstance(version_id, str) and _VERSION_RE.fullmatch(version_id)):
            raise ValueError(f"{origin}: DefaultVersionId {version_id!r} is not v<n>")
        if not (isinstance(path, str) and _PATH_RE.fullmatch(path)):
            raise ValueError(f"{origin}: Path {path!r} is not an IAM path")
        if not isinstance(description, str) or len(description) > 1000:
            raise ValueError(f"{origin}: Description must be a string of at most 1000 characters")
        try:
            parse_policy(document, "identity")
        except PolicyError as exc:
            raise ValueError(f"{origin}: the document does not parse: {exc}") from None
        return cls(name, description, json.dumps(document, indent=4), path, version_id)


#: Where the AWS documents live (package data).
MANAGED_POLICY_DIR: Traversable = resources.files("sagestack") / "authz" / "managed"


def load_builtin_policies(directory: Traversable | None = None) -> tuple[BuiltinPolicy, ...]:
    """Every ``<PolicyName>.json`` of ``directory`` (default: the packaged ones), by name."""
    directory = directory or MANAGED_POLICY_DIR
    out = []
    for item in sorted(directory.iterdir(), key=lambda i: i.name):
        if not item.name.endswith(".json"):
            continue
        policy = BuiltinPolicy.from_data(json.loads(item.read_text(encoding="utf-8")), item.name)
        if f"{policy.name}.json" != item.name:
            raise ValueError(f"{item.name}: holds PolicyName {policy.name!r}")
        out.append(policy)
    if not out:
        raise ValueError(f"no managed policy documents in {directory}")
    return tuple(out)


BUILTIN_POLICIES: tuple[BuiltinPolicy, ...] = load_builtin_policies()


def builtin_policy_id(arn: str) -> str:
    """A stable ANPA id per AWS policy, the same on every installation (as in AWS)."""
    digest = int.from_bytes(hashlib.sha256(arn.encode()).digest(), "big")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    chars = []
    for _ in range(17):
        digest, index = divmod(digest, len(alphabet))
        chars.append(alphabet[index])
    return "ANPA" + "".join(chars)


def _same_document(a: str, b: str) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def _add_aws_version(session: Session, stored: ManagedPolicy, builtin: BuiltinPolicy) -> None:
    """Store the document as the new default version, under AWS's version id."""
    versions = versions_of(session, stored.arn)
    if len(versions) >= MAX_VERSIONS:
        # Make room by dropping the oldest non-default version.
        oldest = next(v for v in reversed(versions) if not v.is_default)
        session.delete(oldest)
        session.flush()
    following = max(stored.next_version_number, builtin.version_number + 1)
    stored.next_version_number = builtin.version_number
    add_version(session, stored, builtin.document, set_default=True)
    stored.next_version_number = following


def _refresh(session: Session, stored: ManagedPolicy, builtin: BuiltinPolicy) -> None:
    if stored.description != builtin.description:
        stored.description = builtin.description
    if stored.default_version_id == builtin.version_id and _same_document(stored.document, builtin.document):
        return
    same_id = session.scalars(
        select(PolicyVersion).where(
            PolicyVersion.policy_arn == stored.arn, PolicyVersion.version_id == builtin.version_id
        )
    ).first()
    if same_id is None:
        _add_aws_version(session, stored, builtin)
        return
    # A version already carries AWS's id: one seeded before the documents were AWS's
    # (sagestack's own short equivalents, numbered from v1). AWS's document replaces it.
    if not _same_document(same_id.document, builtin.document):
        same_id.document = builtin.document
    make_default(session, stored, same_id)


def _create(session: Session, builtin: BuiltinPolicy) -> None:
    policy = new_policy(
        session,
        builtin.arn,
        builtin.name,
        builtin.path,
        builtin.document,
        builtin.description,
        aws_managed=True,
        policy_id=builtin_policy_id(builtin.arn),
    )
    if builtin.version_id != "v1":
        # new_policy numbers the first version v1; AWS's default version has its own id.
        (first,) = versions_of(session, policy.arn)
        first.version_id = policy.default_version_id = builtin.version_id
        policy.next_version_number = builtin.version_number + 1
        session.flush()


@seeder
def seed_managed_policies(database: Database) -> None:
    """Create or update the built-in AWS managed policies; safe to call on every start."""
    with database.transaction() as session:
        existing = {
            p.arn: p
            for p in session.scalars(select(ManagedPolicy).where(ManagedPolicy.aws_managed.is_(True)))
        }
        for builtin in BUILTIN_POLICIES:
            stored = existing.get(builtin.arn)
            if stored is None:
                _create(session, builtin)
            else:
                _refresh(session, stored, builtin)
