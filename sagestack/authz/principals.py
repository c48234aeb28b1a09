"""The policies that apply to a user, role or group, read from the IAM tables.

One loader for both the request path (:mod:`sagestack.authz.authorizer`) and
IAM's SimulatePrincipalPolicy, so a simulation and a real request can never
disagree about which documents take part.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sagestack.arns import iam_arn
from sagestack.authz.policy import PolicySource, parse_policy
from sagestack.db.models.identity import (
    GroupMember,
    IamGroup,
    IamRole,
    IamUser,
    InlinePolicy,
    ManagedPolicy,
    PolicyAttachment,
)

#: The table of each kind of IAM principal, by its principal type.
PRINCIPAL_MODELS: dict[str, type[IamUser] | type[IamRole] | type[IamGroup]] = {
    "user": IamUser,
    "role": IamRole,
    "group": IamGroup,
}


@dataclass
class PrincipalPolicies:
    """Everything IAM evaluates for one user, role or group."""

    arn: str
    identity: list[PolicySource]
    #: None when the principal has no permissions boundary (groups never have one).
    boundary: list[PolicySource] | None


def stored_source(policy: ManagedPolicy) -> PolicySource:
    kind = "aws-managed" if policy.aws_managed else "user-managed"
    return PolicySource(parse_policy(policy.document), policy.name, kind, policy.arn)


def find_principal(
    session: Session, principal_type: str, name: str
) -> IamUser | IamRole | IamGroup | None:
    """The user, role or group of that name; IAM names are unique regardless of case, and looked up that way."""
    model = PRINCIPAL_MODELS[principal_type]
    return session.scalars(select(model).where(func.lower(model.name) == name.lower())).first()


def group_names_of(session: Session, user_name: str) -> list[str]:
    """The groups a user (by its stored name) belongs to."""
    return list(session.scalars(select(GroupMember.group_name).where(GroupMember.user_name == user_name)))


def _own_policies(session: Session, principal_type: str, name: str) -> list[PolicySource]:
    """The managed policies attached to one principal (stored name), then its inline ones."""
    sources: list[PolicySource] = []
    arns = session.scalars(
        select(PolicyAttachment.policy_arn).where(
            PolicyAttachment.principal_type == principal_type, PolicyAttachment.principal_name == name
        )
    )
    for arn in arns:
        policy = session.get(ManagedPolicy, arn)
        if policy is not None:
            sources.append(stored_source(policy))
    inline = session.scalars(
        select(InlinePolicy).where(
            InlinePolicy.principal_type == principal_type, InlinePolicy.principal_name == name
        )
    )
    sources += [PolicySource(parse_policy(p.document), p.policy_name, principal_type) for p in inline]
    return sources


def _once(sources: list[PolicySource]) -> list[PolicySource]:
    """A managed policy attached to a user and to one of its groups takes part once."""
    seen: set[str] = set()
    out = []
    for source in sources:
        if source.arn is not None:
            if source.arn in seen:
                continue
            seen.add(source.arn)
        out.append(source)
    return out


def principal_policies(
    session: Session, principal_type: str, name: str, account: str
) -> PrincipalPolicies | None:
    """Attached and inline policies (and boundary) of a user, role or group; None if it does not exist.

    A user's include those of every group it belongs to (inline ones with source type
    "group"), as IAM evaluates them. Raises :class:`~sagestack.authz.policy.PolicyError`
    for a stored document IAM would not accept.
    """
    row = find_principal(session, principal_type, name)
    if row is None:
        return None
    sources = _own_policies(session, principal_type, row.name)
    if principal_type == "user":
        for group in group_names_of(session, row.name):
            sources += _own_policies(session, "group", group)
        sources = _once(sources)
    boundary = None
    if not isinstance(row, IamGroup) and row.permissions_boundary:
        policy = session.get(ManagedPolicy, row.permissions_boundary)
        boundary = [stored_source(policy)] if policy is not None else []
    return PrincipalPolicies(iam_arn(account, principal_type, row.path, row.name), sources, boundary)
