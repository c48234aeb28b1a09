"""IAM groups: CreateGroup, GetGroup, ListGroups, UpdateGroup, DeleteGroup and memberships.

A group's policies (Put/Get/List/DeleteGroupPolicy, Attach/Detach/ListAttachedGroupPolicies)
are in :mod:`sagestack.services.iam.attachments`, shared with users and roles; what they
grant its members is read by :func:`sagestack.authz.principals.principal_policies`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sagestack.authz.principals import group_names_of
from sagestack.db.models.identity import GroupMember, IamGroup, IamUser
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    GROUP,
    SERVICE,
    check_name,
    check_no_policies,
    check_path,
    db,
    delete_conflict,
    find_group,
    group_shape,
    limit_exceeded,
    list_page,
    paginate_by_name,
    random_id,
    require_group,
    require_user,
    update_name_and_path,
    user_summary,
)

#: AWS's default quotas: groups in an account, groups one user may belong to.
MAX_GROUPS = 300
MAX_GROUPS_PER_USER = 10


def _members(session: Session, group: IamGroup) -> list[IamUser]:
    users = session.scalars(
        select(IamUser)
        .join(GroupMember, GroupMember.user_name == IamUser.name)
        .where(GroupMember.group_name == group.name)
    )
    return list(users)


def _membership(session: Session, params: dict[str, Any]) -> tuple[IamGroup, IamUser, GroupMember | None]:
    """The group and user a request names (both must exist) and the user's membership, if any."""
    group = require_group(session, params["GroupName"])
    user = require_user(session, params["UserName"])
    return group, user, session.get(GroupMember, (group.name, user.name))


@operation(SERVICE)
def create_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name, path = params["GroupName"], params.get("Path") or "/"
    check_name(name, "groupName", GROUP.name_max)
    check_path(path)
    with db(ctx).transaction() as session:
        if find_group(session, name) is not None:
            raise GROUP.exists(name)
        if session.scalar(select(func.count()).select_from(IamGroup)) >= MAX_GROUPS:
            raise limit_exceeded(f"Cannot exceed quota for GroupsPerAccount: {MAX_GROUPS}")
        group = IamGroup(name=name, group_id=random_id("AGPA"), path=path)
        session.add(group)
        session.flush()
        return {"Group": group_shape(group, ctx.account_id)}


@operation(SERVICE)
def get_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        group = require_group(session, params["GroupName"])
        members = _members(session, group)
        shape = group_shape(group, ctx.account_id)
    page, extra = paginate_by_name(members, params)
    return {"Group": shape, "Users": [user_summary(u, ctx.account_id) for u in page], **extra}


@operation(SERVICE)
def list_groups(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    page, extra = list_page(ctx, GROUP, params)
    return {"Groups": [group_shape(g, ctx.account_id) for g in page], **extra}


@operation(SERVICE)
def update_group(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        update_name_and_path(session, ctx.account_id, GROUP, params)  # its members and policies follow
    return None


@operation(SERVICE)
def delete_group(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        group = require_group(session, params["GroupName"])
        if session.scalar(
            select(func.count()).select_from(GroupMember).where(GroupMember.group_name == group.name)
        ):
            raise delete_conflict("Cannot delete entity, must remove users from group first.")
        check_no_policies(session, GROUP, group.name)
        session.delete(group)
    return None


# --------------------------------------------------------------------------- memberships


@operation(SERVICE)
def add_user_to_group(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        group, user, membership = _membership(session, params)
        if membership is not None:
            return None  # adding a member again is a no-op in AWS
        if len(group_names_of(session, user.name)) >= MAX_GROUPS_PER_USER:
            raise limit_exceeded(f"Cannot exceed quota for GroupsPerUser: {MAX_GROUPS_PER_USER}")
        session.add(GroupMember(group_name=group.name, user_name=user.name))
    return None


@operation(SERVICE)
def remove_user_from_group(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        _, _, membership = _membership(session, params)
        if membership is not None:  # removing a non-member succeeds in AWS
            session.delete(membership)
    return None


@operation(SERVICE)
def list_groups_for_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        user = require_user(session, params["UserName"])
        groups = list(
            session.scalars(
                select(IamGroup)
                .join(GroupMember, GroupMember.group_name == IamGroup.name)
                .where(GroupMember.user_name == user.name)
            )
        )
    page, extra = paginate_by_name(groups, params)
    return {"Groups": [group_shape(g, ctx.account_id) for g in page], **extra}
