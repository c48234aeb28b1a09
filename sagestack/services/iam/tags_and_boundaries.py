"""What users and roles share besides policies: tags and permissions boundaries.

Each operation is written once and registered for both (groups have neither in IAM):
Tag/Untag/List{User,Role}Tags and Put/Delete{User,Role}PermissionsBoundary.
"""

from __future__ import annotations

from typing import Any

from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    ROLE,
    USER,
    Entity,
    EntityHandler,
    add_tags,
    db,
    get_tags,
    paginate_in_order,
    register_for,
    remove_tags,
    require_boundary,
)


def _tag(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        row = kind.require(session, params[kind.param])
        add_tags(session, kind.arn(ctx.account_id, row), params["Tags"])


def _untag(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        row = kind.require(session, params[kind.param])
        remove_tags(session, kind.arn(ctx.account_id, row), params["TagKeys"])


def _list_tags(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> dict[str, Any]:
    with db(ctx).session() as session:
        row = kind.require(session, params[kind.param])
        tags = get_tags(session, kind.arn(ctx.account_id, row))
    page, extra = paginate_in_order(tags, params)
    return {"Tags": page, **extra}


def _put_boundary(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        row = kind.require(session, params[kind.param])
        require_boundary(session, params["PermissionsBoundary"])
        row.permissions_boundary = params["PermissionsBoundary"]


def _delete_boundary(ctx: RequestContext, params: dict[str, Any], kind: Entity) -> None:
    with db(ctx).transaction() as session:
        row = kind.require(session, params[kind.param])
        row.permissions_boundary = None


#: Operation name templates ({} = User | Role) and the one handler each.
_OPERATIONS: dict[str, EntityHandler] = {
    "Tag{}": _tag,
    "Untag{}": _untag,
    "List{}Tags": _list_tags,
    "Put{}PermissionsBoundary": _put_boundary,
    "Delete{}PermissionsBoundary": _delete_boundary,
}

register_for((USER, ROLE), _OPERATIONS)
