"""IAM roles: CRUD and trust policy (tags and boundary: tags_and_boundaries)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from sagestack.db.models.identity import IamRole, SessionCredential
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    ROLE,
    SERVICE,
    add_tags,
    check_description,
    check_name,
    check_no_policies,
    check_path,
    check_session_duration,
    check_tags,
    db,
    delete_all_tags,
    find_role,
    get_tags,
    limit_exceeded,
    list_page,
    parse_document,
    random_id,
    require_boundary,
    require_role,
    role_shape,
    significant_size,
)

#: AWS's default quota for a trust policy (non-whitespace characters).
MAX_TRUST_POLICY_SIZE = 2048


def _check_trust_policy(document: str) -> None:
    parse_document(document, "trust")
    if significant_size(document) > MAX_TRUST_POLICY_SIZE:
        raise limit_exceeded(f"Cannot exceed quota for ACLSizePerRole: {MAX_TRUST_POLICY_SIZE}")



def _detail(session: Session, ctx: RequestContext, role: IamRole) -> dict[str, Any]:
    # GetRole reports RoleLastUsed even when empty; sagestack does not track it yet.
    return {**role_shape(role, ctx.account_id, get_tags(session, ROLE.arn(ctx.account_id, role))), "RoleLastUsed": {}}


@operation(SERVICE)
def create_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name, path = params["RoleName"], params.get("Path") or "/"
    check_name(name, "roleName")
    check_path(path)
    duration = params.get("MaxSessionDuration", 3600)
    check_session_duration(duration)
    check_description(params.get("Description"))
    tags = params.get("Tags") or []
    check_tags(tags)
    document = params["AssumeRolePolicyDocument"]
    _check_trust_policy(document)
    with db(ctx).transaction() as session:
        if find_role(session, name) is not None:
            raise ROLE.exists(name)
        boundary = params.get("PermissionsBoundary")
        if boundary:
            require_boundary(session, boundary)
        role = IamRole(
            name=name,
            role_id=random_id("AROA"),
            path=path,
            assume_role_policy_document=document,
            description=params.get("Description"),
            max_session_duration=duration,
            permissions_boundary=boundary,
        )
        session.add(role)
        session.flush()
        add_tags(session, ROLE.arn(ctx.account_id, role), tags)
        shape = role_shape(role, ctx.account_id, get_tags(session, ROLE.arn(ctx.account_id, role)))
        return {"Role": shape}


@operation(SERVICE)
def get_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        role = require_role(session, params["RoleName"])
        return {"Role": _detail(session, ctx, role)}


@operation(SERVICE)
def list_roles(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    page, extra = list_page(ctx, ROLE, params)
    # ListRoles leaves out tags, boundary and last use, as AWS does.
    return {"Roles": [role_shape(r, ctx.account_id) for r in page], **extra}


@operation(SERVICE)
def update_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_description(params.get("Description"))
    if params.get("MaxSessionDuration") is not None:
        check_session_duration(params["MaxSessionDuration"])
    with db(ctx).transaction() as session:
        role = require_role(session, params["RoleName"])
        if params.get("Description") is not None:
            role.description = params["Description"]
        if params.get("MaxSessionDuration") is not None:
            role.max_session_duration = params["MaxSessionDuration"]
    return {}  # UpdateRole's output shape is an empty structure, unlike most IAM writes


@operation(SERVICE)
def update_role_description(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_description(params["Description"])
    with db(ctx).transaction() as session:
        role = require_role(session, params["RoleName"])
        role.description = params["Description"]
        session.flush()
        return {"Role": _detail(session, ctx, role)}


@operation(SERVICE)
def update_assume_role_policy(ctx: RequestContext, params: dict[str, Any]) -> None:
    _check_trust_policy(params["PolicyDocument"])
    with db(ctx).transaction() as session:
        role = require_role(session, params["RoleName"])
        role.assume_role_policy_document = params["PolicyDocument"]
    return None


@operation(SERVICE)
def delete_role(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        role = require_role(session, params["RoleName"])
        check_no_policies(session, ROLE, role.name)
        delete_all_tags(session, ROLE.arn(ctx.account_id, role))
        # Sessions of a deleted role must not outlive it (a new role of the same
        # name is a different principal in AWS).
        session.execute(delete(SessionCredential).where(SessionCredential.role_name == role.name))
        session.delete(role)
    return None


@operation(SERVICE)
def list_instance_profiles_for_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    # sagestack has no EC2 instance profiles; tools call this before DeleteRole.
    with db(ctx).session() as session:
        require_role(session, params["RoleName"])
    return {"InstanceProfiles": [], "IsTruncated": False}
