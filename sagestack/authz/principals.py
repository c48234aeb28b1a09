"""The policies that apply to a user or role, read from the IAM tables.

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
from sagestack.db.models.identity import IamRole, IamUser, InlinePolicy, ManagedPolicy, PolicyAttachment


@dataclass
class PrincipalPolicies:
    """Everything IAM evaluates for one user or role."""

    arn: str
    identity: list[PolicySource]
    #: None when the principal has no permissions boundary.
    boundary: list[PolicySource] | None


def stored_source(policy: ManagedPolicy) -> PolicySource:
    kind = "aws-managed" if policy.aws_managed else "user-managed"
    return PolicySource(parse_policy(policy.document), policy.name, kind, policy.arn)


def _find(session: Session, principal_type: str, name: str) -> IamUser | IamRole | None:
    # IAM names are unique regardless of case, and looked up that way.
    model = IamUser if principal_type == "user" else IamRole
    return session.scalars(select(model).where(func.lower(model.name) == name.lower())).first()


def principal_policies(
    session: Session, principal_type: str, name: str, account: str
) -> PrincipalPolicies | None:
    """Attached and inline policies (and boundary) of a user or role; None if it does not exist.

    Raises :class:`~sagestack.authz.policy.PolicyError` for a stored document IAM would not accept.
    """
    row = _find(session, principal_type, name)
    if row is None:
        return None
    sources: list[PolicySource] = []
    arns = session.scalars(
        select(PolicyAttachment.policy_arn).where(
            PolicyAttachment.principal_type == principal_type, PolicyAttachment.principal_name == row.name
        )
    )
    for arn in arns:
        policy = session.get(ManagedPolicy, arn)
        if policy is not None:
            sources.append(stored_source(policy))
    inline = session.scalars(
        select(InlinePolicy).where(
            InlinePolicy.principal_type == principal_type, InlinePolicy.principal_name == row.name
        )
    )
    sources += [PolicySource(parse_policy(p.document), p.policy_name, principal_type) for p in inline]
    boundary = None
    if row.permissions_boundary:
        policy = session.get(ManagedPolicy, row.permissions_boundary)
        boundary = [stored_source(policy)] if policy is not None else []
    return PrincipalPolicies(iam_arn(account, principal_type, row.path, row.name), sources, boundary)
