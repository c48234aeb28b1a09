"""Managed-policy attachments and inline policies, for users, roles and groups alike.

Each operation is written once and registered for every kind of principal (see the
end of this module): Attach/Detach/ListAttached{User,Role,Group}Policies and
Put/Get/List/Delete{User,Role,Group}Policy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db.models.identity import InlinePolicy, ManagedPolicy, PolicyAttachment
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    GROUP,
    ROLE,
    USER,
    Entity,
    EntityHandler,
    check_name,
    check_path_prefix,
    db,
    encode_document,
    limit_exceeded,
    name_key,
    no_such_entity,
    paginate,
    parse_document,
    register_for,
    require_policy,
    significant_size,
)

#: AWS quotas on the combined size of one principal's inline policies (non-whitespace characters).
INLINE_SIZE = {"user": 2048, "role": 10240, "group": 5120}
#: AWS's default quota of managed policies attached to one user, role or group.
MAX_ATTACHED = 10


# --------------------------------------------------------------------------- managed


def _attachment(session: Session, kind: Entity, name: str, arn: str) -> PolicyAttachment | None:
    return session.scalars(
        select(PolicyAttachment).where(
            PolicyAttachment.principal_type == kind.principal_type,
            PolicyAttachment.principal_name == name,
            PolicyAttachment.policy_arn == arn,
        )
    ).first()


def _attach(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        principal = kind.require(session, params[kind.param])
        policy = require_policy(session, params["PolicyArn"])
        if _attachment(session, kind, principal.name, policy.arn) is not None:
            return  # attaching twice is a no-op in AWS
        count = session.scalar(
            select(func.count())
            .select_from(PolicyAttachment)
            .where(
                PolicyAttachment.principal_type == kind.principal_type,
                PolicyAttachment.principal_name == principal.name,
            )
        )
        if count >= MAX_ATTACHED:
            raise limit_exceeded(f"Cannot exceed quota for PoliciesPer{kind.label}: {MAX_ATTACHED}")
        session.add(
            PolicyAttachment(
                principal_type=kind.principal_type, principal_name=principal.name, policy_arn=policy.arn
            )
        )


def _detach(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        principal = kind.require(session, params[kind.param])
        arn = params["PolicyArn"]
        row = _attachment(session, kind, principal.name, arn)
        if row is None:
            raise no_such_entity(f"Policy {arn} was not found.")
        session.delete(row)


def _list_attached(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> dict[str, Any]:
    prefix = params.get("PathPrefix") or "/"
    check_path_prefix(prefix)
    with db(ctx).session() as session:
        principal = kind.require(session, params[kind.param])
        policies = list(
            session.scalars(
                select(ManagedPolicy)
                .join(PolicyAttachment, PolicyAttachment.policy_arn == ManagedPolicy.arn)
                .where(
                    PolicyAttachment.principal_type == kind.principal_type,
                    PolicyAttachment.principal_name == principal.name,
                )
            )
        )
    policies = [p for p in policies if p.path.startswith(prefix)]
    policies.sort(key=_key)
    page, extra = paginate(policies, params, _key)
    return {"AttachedPolicies": [{"PolicyName": p.name, "PolicyArn": p.arn} for p in page], **extra}


def _key(policy: ManagedPolicy) -> str:
    return f"{name_key(policy.name)}|{policy.arn}"








# --------------------------------------------------------------------------- inline


def _inline_rows(session: Session, kind: Entity, name: str) -> list[InlinePolicy]:
    return list(
        session.scalars(
            select(InlinePolicy).where(
                InlinePolicy.principal_type == kind.principal_type, InlinePolicy.principal_name == name
            )
        )
    )


def _find_inline(rows: list[InlinePolicy], policy_name: str) -> InlinePolicy | None:
    return next((r for r in rows if r.policy_name.lower() == policy_name.lower()), None)


def _inline_not_found(kind: Entity, policy_name: str) -> AwsError:
    return no_such_entity(f"The {kind.principal_type} policy with name {policy_name} cannot be found.")


def _put_inline(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    policy_name, document = params["PolicyName"], params["PolicyDocument"]
    check_name(policy_name, "policyName", 128)
    parse_document(document)
    with db(ctx).transaction() as session:
        principal = kind.require(session, params[kind.param])
        rows = _inline_rows(session, kind, principal.name)
        existing = _find_inline(rows, policy_name)
        others = sum(significant_size(r.document) for r in rows if r is not existing)
        limit = INLINE_SIZE[kind.principal_type]
        if others + significant_size(document) > limit:
            raise limit_exceeded(
                f"Maximum policy size of {limit} bytes exceeded for "
                f"{kind.principal_type} {principal.name}"
            )
        if existing is None:
            session.add(
                InlinePolicy(
                    principal_type=kind.principal_type,
                    principal_name=principal.name,
                    policy_name=policy_name,
                    document=document,
                )
            )
        else:
            existing.document = document


def _get_inline(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> dict[str, Any]:
    with db(ctx).session() as session:
        principal = kind.require(session, params[kind.param])
        row = _find_inline(_inline_rows(session, kind, principal.name), params["PolicyName"])
    if row is None:
        raise _inline_not_found(kind, params["PolicyName"])
    return {
        kind.param: principal.name,
        "PolicyName": row.policy_name,
        "PolicyDocument": encode_document(row.document),
    }


def _list_inline(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> dict[str, Any]:
    with db(ctx).session() as session:
        principal = kind.require(session, params[kind.param])
        names = sorted((r.policy_name for r in _inline_rows(session, kind, principal.name)), key=name_key)
    page, extra = paginate(names, params, name_key)
    return {"PolicyNames": page, **extra}


def _delete_inline(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        principal = kind.require(session, params[kind.param])
        row = _find_inline(_inline_rows(session, kind, principal.name), params["PolicyName"])
        if row is None:
            raise _inline_not_found(kind, params["PolicyName"])
        session.delete(row)


# --------------------------------------------------------------------------- registration

#: Operation name templates ({} = User | Role | Group) and the one handler each.
_OPERATIONS: dict[str, EntityHandler] = {
    "Attach{}Policy": _attach,
    "Detach{}Policy": _detach,
    "ListAttached{}Policies": _list_attached,
    "Put{}Policy": _put_inline,
    "Get{}Policy": _get_inline,
    "List{}Policies": _list_inline,
    "Delete{}Policy": _delete_inline,
}

register_for((USER, ROLE, GROUP), _OPERATIONS)
