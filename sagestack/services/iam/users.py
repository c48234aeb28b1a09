"""IAM users: CreateUser, GetUser, ListUsers, UpdateUser, DeleteUser, user tags and boundary."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sagestack.authz.principals import group_names_of
from sagestack.db.models.identity import AccessKey, IamUser
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    SERVICE,
    USER,
    add_tags,
    already_exists,
    caller_user_name,
    check_name,
    check_no_policies,
    check_path,
    check_path_prefix,
    check_tags,
    db,
    delete_all_tags,
    delete_conflict,
    find_user,
    get_tags,
    move_tags,
    paginate_by_name,
    paginate_in_order,
    random_id,
    remove_tags,
    rename_principal,
    require_boundary,
    require_user,
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
            raise already_exists(f"User with name {name} already exists.")
        boundary = params.get("PermissionsBoundary")
        if boundary:
            require_boundary(session, boundary)
        user = IamUser(name=name, user_id=random_id("AIDA"), path=path, permissions_boundary=boundary)
        session.add(user)
        session.flush()
        add_tags(session, user_arn(ctx.account_id, path, name), tags)
        return {"User": user_shape(user, ctx.account_id, get_tags(session, _arn(ctx, user)))}


@operation(SERVICE)
def get_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = caller_user_name(ctx, params)
    with db(ctx).session() as session:
        user = require_user(session, name)
        return {"User": user_shape(user, ctx.account_id, get_tags(session, _arn(ctx, user)))}


@operation(SERVICE)
def list_users(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    prefix = params.get("PathPrefix") or "/"
    check_path_prefix(prefix)
    with db(ctx).session() as session:
        users = [u for u in session.scalars(select(IamUser)) if u.path.startswith(prefix)]
    page, extra = paginate_by_name(users, params)
    # Listing omits tags and boundaries, as AWS does (GetUser returns them).
    return {"Users": [user_summary(u, ctx.account_id) for u in page], **extra}


@operation(SERVICE)
def update_user(ctx: RequestContext, params: dict[str, Any]) -> None:
    new_name, new_path = params.get("NewUserName"), params.get("NewPath")
    if new_name:
        check_name(new_name, "newUserName")
    if new_path:
        check_path(new_path, "newPath")
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        old_name, old_arn = user.name, _arn(ctx, user)
        target_name, target_path = new_name or user.name, new_path or user.path
        if new_name and new_name.lower() != old_name.lower() and find_user(session, new_name):
            raise already_exists(f"User with name {new_name} already exists.")
        if target_name != old_name:
            rename_principal(session, USER, old_name, target_name)
        session.execute(update(IamUser).where(IamUser.name == target_name).values(path=target_path))
        move_tags(session, old_arn, user_arn(ctx.account_id, target_path, target_name))
    return None


@operation(SERVICE)
def delete_user(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        if user.is_admin:
            raise delete_conflict("Cannot delete the installation's admin user.")
        _check_user_is_empty(session, user.name)
        delete_all_tags(session, _arn(ctx, user))
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


# --------------------------------------------------------------------------- tags


@operation(SERVICE)
def tag_user(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        add_tags(session, _arn(ctx, user), params["Tags"])
    return None


@operation(SERVICE)
def untag_user(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        remove_tags(session, _arn(ctx, user), params["TagKeys"])
    return None


@operation(SERVICE)
def list_user_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        user = require_user(session, params["UserName"])
        tags = get_tags(session, _arn(ctx, user))
    page, extra = paginate_in_order(tags, params)
    return {"Tags": page, **extra}


# --------------------------------------------------------------------------- boundary


@operation(SERVICE)
def put_user_permissions_boundary(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        require_boundary(session, params["PermissionsBoundary"])
        user.permissions_boundary = params["PermissionsBoundary"]
    return None


@operation(SERVICE)
def delete_user_permissions_boundary(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        user = require_user(session, params["UserName"])
        user.permissions_boundary = None
    return None


def _arn(ctx: RequestContext, user: IamUser) -> str:
    return user_arn(ctx.account_id, user.path, user.name)
