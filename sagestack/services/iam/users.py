"""IAM users: CreateUser, GetUser, ListUsers, UpdateUser, DeleteUser (tags and boundary: tags_and_boundaries)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sagestack.authz.principals import group_names_of
from sagestack.db.models.identity import AccessKey, IamUser
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    SERVICE,
    USER,
    add_tags,
    caller_user_name,
    check_name,
    check_no_policies,
    check_path,
    check_tags,
    db,
    delete_all_tags,
    delete_conflict,
    find_user,
    get_tags,
    list_page,
    move_tags,
    random_id,
    require_boundary,
    require_user,
    update_name_and_path,
    user_arn,
    user_shape,
    user_summary,
)


@operation(SERVICE)
def create_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name, path = params["UserName"], params.get("Path") or "/"
    check_name(name, "userName")
    check_path(path)
    tags = params.get("Tags") or []
    check_tags(tags)
    with db(ctx).transaction() as session:
        if find_user(session, name) is not None:
            raise USER.exists(name)
        boundary = params.get("PermissionsBoundary")
        if boundary:
            require_boundary(session, boundary)
        user = IamUser(name=name, user_id=random_id("AIDA"), path=path, permissions_boundary=boundary)
        session.add(user)
        session.flush()
        add_tags(session, user_arn(ctx.account_id, path, name), tags)
        return {"User": user_shape(user, ctx.account_id, get_tags(session, USER.arn(ctx.account_id, user)))}


@operation(SERVICE)
def get_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = caller_user_name(ctx, params)
    with db(ctx).session() as session:
        user = require_user(session, name)
        return {"User": user_shape(user, ctx.account_id, get_tags(session, USER.arn(ctx.account_id, user)))}


@operation(SERVICE)
def list_users(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    page, extra = list_page(ctx, USER, params)
    # Listing omits tags and boundaries, as AWS does (GetUser returns them).
    return {"Users": [user_summary(u, ctx.account_id) for u in page], **extra}


@operation(SERVICE)
def update_user(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        old_arn, new_arn = update_name_and_path(session, ctx.account_id, USER, params)
        move_tags(session, old_arn, new_arn)
    return None


@operation(SERVICE)
def delete_user(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        if user.is_admin:
            raise delete_conflict("Cannot delete the installation's admin user.")
        _check_user_is_empty(session, user.name)
        delete_all_tags(session, USER.arn(ctx.account_id, user))
        session.delete(user)
    return None


def _check_user_is_empty(session: Session, name: str) -> None:
    """AWS refuses to delete a user that still owns keys or policies, or belongs to a group."""
    keys = session.scalar(select(func.count()).select_from(AccessKey).where(AccessKey.user_name == name))
    if keys:
        raise delete_conflict("Cannot delete entity, must delete access keys first.")
    check_no_policies(session, USER, name)
    if group_names_of(session, name):
        # AWS's words, the same as DeleteGroup's for a group with members.
        raise delete_conflict("Cannot delete entity, must remove users from group first.")

