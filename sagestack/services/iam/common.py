"""Shared pieces of the IAM handlers: errors, ids, ARNs, validation, lookups, tags, paging."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sagestack.arns import iam_arn
from sagestack.authz.policy import Policy, PolicyError, PolicyKind, parse_policy
from sagestack.authz.principals import PRINCIPAL_MODELS, find_principal
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.identity import (
    IamGroup,
    IamRole,
    IamUser,
    InlinePolicy,
    Installation,
    ManagedPolicy,
    PolicyAttachment,
)
from sagestack.logic import tags as tag_store
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.pagination import decode_token, encode_token

T = TypeVar("T")

SERVICE = "iam"
DEFAULT_MAX_ITEMS = 100
MAX_TAGS = 50
AWS_POLICY_PREFIX = "arn:aws:iam::aws:policy"

_ID_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_NAME_RE = re.compile(r"[\w+=,.@-]+", re.ASCII)
_PATH_RE = re.compile(r"/|/[\x21-\x7e]+/")
_POLICY_PATH_RE = re.compile(r"(/[A-Za-z0-9.,+@=_-]+)*/")
_TAG_EXTRA = set("_.:/=+-@")


# --------------------------------------------------------------------------- errors


def no_such_entity(message: str) -> AwsError:
    return AwsError("NoSuchEntity", message, 404)


def already_exists(message: str) -> AwsError:
    return AwsError("EntityAlreadyExists", message, 409)


def delete_conflict(message: str) -> AwsError:
    return AwsError("DeleteConflict", message, 409)


def limit_exceeded(message: str) -> AwsError:
    return AwsError("LimitExceeded", message, 409)


def malformed(message: str) -> AwsError:
    return AwsError("MalformedPolicyDocument", message, 400)


def invalid_input(message: str) -> AwsError:
    return AwsError("InvalidInput", message, 400)


def validation_error(value: Any, field: str, constraint: str) -> AwsError:
    """IAM's wording for an input that breaks the API model's constraints."""
    message = f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
    return AwsError("ValidationError", message + constraint, 400)


def access_denied(ctx: RequestContext, action: str, resource: str) -> AwsError:
    return AwsError(
        "AccessDenied",
        f"User: {ctx.principal.arn} is not authorized to perform: iam:{action} on resource: {resource}",
        403,
    )


def policy_not_found(arn: str) -> AwsError:
    return no_such_entity(f"Policy {arn} does not exist or is not attachable.")


# --------------------------------------------------------------------------- ids & ARNs


def random_id(prefix: str, length: int = 17) -> str:
    """AWS-style unique ids: AIDA (user), AROA (role), AGPA (group), ANPA (policy) + uppercase alnum."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def random_secret(length: int = 40) -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def user_arn(account: str, path: str, name: str) -> str:
    return iam_arn(account, "user", path, name)


def role_arn(account: str, path: str, name: str) -> str:
    return iam_arn(account, "role", path, name)


def policy_arn(account: str, path: str, name: str) -> str:
    return iam_arn(account, "policy", path, name)


_ENTITY_ARN_RE = re.compile(r"arn:aws:iam::(\d{12}|aws):(user|role|group|policy)(/(?:.*/)?)([^/]+)")


def split_arn(arn: str) -> tuple[str, str, str, str] | None:
    """(account, kind, path, name) of an IAM user/role/group/policy ARN, else None."""
    match = _ENTITY_ARN_RE.fullmatch(arn)
    if not match:
        return None
    account, kind, path, name = match.groups()
    return account, kind, path, name


def encode_document(document: str) -> str:
    """IAM returns policy documents URL-encoded; botocore decodes them on the way in."""
    return quote(document, safe="")


def db(ctx: RequestContext) -> Database:
    return ctx.platform.db


# --------------------------------------------------------------------------- validation


def check_name(value: str, field: str, max_len: int = 64) -> None:
    if len(value) > max_len:
        raise validation_error(value, field, f"Member must have length less than or equal to {max_len}")
    if not _NAME_RE.fullmatch(value):
        raise validation_error(value, field, r"Member must satisfy regular expression pattern: [\w+=,.@-]+")


def check_path(value: str, field: str = "path") -> None:
    if len(value) > 512 or not _PATH_RE.fullmatch(value):
        raise validation_error(
            value,
            field,
            r"Member must satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
        )


def check_policy_path(value: str, field: str = "path") -> None:
    if len(value) > 512 or not _POLICY_PATH_RE.fullmatch(value):
        raise validation_error(
            value, field, r"Member must satisfy regular expression pattern: ((/[A-Za-z0-9\.,\+@=_-]+)*)/"
        )


def check_path_prefix(value: str | None, field: str = "pathPrefix") -> None:
    if value is not None and not value.startswith("/"):
        raise validation_error(
            value, field, r"Member must satisfy regular expression pattern: \u002F[\u0021-\u007F]*"
        )


def check_session_duration(value: int) -> None:
    if value < 3600:
        raise validation_error(
            value, "maxSessionDuration", "Member must have value greater than or equal to 3600"
        )
    if value > 43200:
        raise validation_error(
            value, "maxSessionDuration", "Member must have value less than or equal to 43200"
        )


def check_description(value: str | None, field: str = "description") -> None:
    if value is not None and len(value) > 1000:
        raise validation_error(value, field, "Member must have length less than or equal to 1000")


def parse_document(document: str, kind: PolicyKind = "identity") -> Policy:
    try:
        return parse_policy(document, kind)
    except PolicyError as exc:
        raise malformed(str(exc)) from None


def significant_size(document: str) -> int:
    """IAM's size quotas count characters other than whitespace."""
    return sum(1 for ch in document if not ch.isspace())


# --------------------------------------------------------------------------- lookups


@dataclass(frozen=True)
class Entity:
    """Users, roles and groups: one lookup, one not-found error and one ARN, by principal type."""

    principal_type: str  # "user" | "role" | "group"
    #: The longest name IAM accepts for one.
    name_max: int = 64

    @property
    def label(self) -> str:
        """"User" | "Role" | "Group", as operation and parameter names spell it."""
        return self.principal_type.capitalize()

    @property
    def param(self) -> str:
        """The request member naming one: "UserName" | "RoleName" | "GroupName"."""
        return f"{self.label}Name"

    def find(self, session: Session, name: str) -> Any:
        return find_principal(session, self.principal_type, name)

    def require(self, session: Session, name: str) -> Any:
        row = self.find(session, name)
        if row is None:
            raise self.not_found(name)
        return row

    def not_found(self, name: str) -> AwsError:
        return no_such_entity(f"The {self.principal_type} with name {name} cannot be found.")

    def exists(self, name: str) -> AwsError:
        return already_exists(f"{self.label} with name {name} already exists.")

    def arn(self, account: str, row: Any) -> str:
        return iam_arn(account, self.principal_type, row.path, row.name)

    def id_of(self, row: Any) -> str:
        """Its unique id (AIDA..., AROA..., AGPA...)."""
        return getattr(row, f"{self.principal_type}_id")


USER = Entity("user")
ROLE = Entity("role")
GROUP = Entity("group", name_max=128)
ENTITIES = {e.principal_type: e for e in (USER, ROLE, GROUP)}

find_user, require_user, user_not_found = USER.find, USER.require, USER.not_found
find_role, require_role, role_not_found = ROLE.find, ROLE.require, ROLE.not_found
find_group, require_group = GROUP.find, GROUP.require


def update_name_and_path(session: Session, account: str, entity: Entity, params: dict[str, Any]) -> tuple[str, str]:
    """UpdateUser / UpdateGroup: New<Kind>Name (unique regardless of case) and NewPath.

    Rows keyed by the name (inline policies, attachments) are moved here; rows with
    foreign keys to it (access keys, group memberships) follow by ON UPDATE CASCADE.
    Returns the ARN before and after.
    """
    new_name, new_path = params.get(f"New{entity.label}Name"), params.get("NewPath")
    if new_name:
        check_name(new_name, f"new{entity.label}Name", entity.name_max)
    if new_path:
        check_path(new_path, "newPath")
    row = entity.require(session, params[entity.param])
    old_name, old_arn = row.name, entity.arn(account, row)
    target_name, target_path = new_name or row.name, new_path or row.path
    if new_name and new_name.lower() != old_name.lower() and entity.find(session, new_name):
        raise entity.exists(new_name)
    model = PRINCIPAL_MODELS[entity.principal_type]
    if target_name != old_name:
        session.execute(update(model).where(model.name == old_name).values(name=target_name))
        for keyed in (InlinePolicy, PolicyAttachment):
            session.execute(
                update(keyed)
                .where(keyed.principal_type == entity.principal_type, keyed.principal_name == old_name)
                .values(principal_name=target_name)
            )
    session.execute(update(model).where(model.name == target_name).values(path=target_path))
    session.expire_all()
    return old_arn, iam_arn(account, entity.principal_type, target_path, target_name)


def list_page(ctx: RequestContext, entity: Entity, params: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """ListUsers / ListRoles / ListGroups: those under PathPrefix, one page in name order."""
    prefix = params.get("PathPrefix") or "/"
    check_path_prefix(prefix)
    model = PRINCIPAL_MODELS[entity.principal_type]
    with db(ctx).session() as session:
        rows = [r for r in session.scalars(select(model)) if r.path.startswith(prefix)]
    return paginate_by_name(rows, params)


#: A handler written once for users, roles and groups: ``(ctx, params, kind)``.
EntityHandler = Callable[[RequestContext, dict[str, Any], Entity], Any]


def register_for(entities: Sequence[Entity], operations: dict[str, EntityHandler]) -> None:
    """Register each handler ``(ctx, params, kind)`` once per entity: "Attach{}Policy" -> AttachUserPolicy, ..."""
    for entity in entities:
        for template, handler in operations.items():
            operation(SERVICE, template.format(entity.label))(partial(handler, kind=entity))


def check_no_policies(session: Session, entity: Entity, name: str) -> None:
    """AWS refuses to delete a user, role or group that still has inline or attached policies."""
    for model, message in (
        (InlinePolicy, "Cannot delete entity, must delete policies first."),
        (PolicyAttachment, "Cannot delete entity, must detach all policies first."),
    ):
        count = session.scalar(
            select(func.count())
            .select_from(model)
            .where(model.principal_type == entity.principal_type, model.principal_name == name)
        )
        if count:
            raise delete_conflict(message)


def require_policy(session: Session, arn: str) -> ManagedPolicy:
    if not arn.startswith("arn:"):
        raise invalid_input(f"ARN {arn} is not valid.")
    policy = session.get(ManagedPolicy, arn)
    if policy is None:
        raise policy_not_found(arn)
    return policy


def require_boundary(session: Session, arn: str) -> ManagedPolicy:
    """The managed policy named as a permissions boundary."""
    policy = session.get(ManagedPolicy, arn)
    if policy is None:
        raise no_such_entity(f"Scope ARN: {arn} does not exist or is not attachable.")
    return policy


def caller_user_name(ctx: RequestContext, params: dict[str, Any]) -> str:
    """The UserName parameter, or the calling user when it is omitted (as AWS does)."""
    name = params.get("UserName")
    if name:
        return name
    if ctx.principal.kind != "user":
        raise AwsError("ValidationError", "Must specify userName when calling with non-User credentials", 400)
    return ctx.principal.name


def installation_account(session: Session) -> str | None:
    row = session.scalars(select(Installation)).first()
    return row.account_id if row else None


def role_by_arn(database: Database, arn: str) -> IamRole | None:
    """The role an ARN names (``arn:aws:iam::<account>:role<path><name>``), or None.

    The path must match too, as it does in AWS: ``role/a/R`` does not name ``role/R``.
    """
    parts = split_arn(arn)
    if parts is None or parts[1] != "role":
        return None
    account, _, path, name = parts
    with database.session() as session:
        expected = installation_account(session)
        if expected is not None and account != expected:
            return None
        role = find_role(session, name)
        if role is None or role.path != path or role.name != name:
            return None
        return role


# --------------------------------------------------------------------------- shapes


def boundary_shape(arn: str | None) -> dict[str, Any]:
    if not arn:
        return {}
    return {
        "PermissionsBoundary": {
            "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
            "PermissionsBoundaryArn": arn,
        }
    }


def user_shape(user: IamUser, account: str, tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Path": user.path,
        "UserName": user.name,
        "UserId": user.user_id,
        "Arn": user_arn(account, user.path, user.name),
        "CreateDate": user.created,
    }
    out.update(boundary_shape(user.permissions_boundary))
    if tags:
        out["Tags"] = tags
    return out


def user_summary(user: IamUser, account: str) -> dict[str, Any]:
    """A user as lists show it (ListUsers, GetGroup): no tags, no boundary, as AWS does."""
    shape = user_shape(user, account)
    shape.pop("PermissionsBoundary", None)
    return shape


def group_shape(group: IamGroup, account: str) -> dict[str, Any]:
    return {
        "Path": group.path,
        "GroupName": group.name,
        "GroupId": group.group_id,
        "Arn": GROUP.arn(account, group),
        "CreateDate": group.created,
    }


def role_shape(role: IamRole, account: str, tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Path": role.path,
        "RoleName": role.name,
        "RoleId": role.role_id,
        "Arn": role_arn(account, role.path, role.name),
        "CreateDate": role.created,
        "AssumeRolePolicyDocument": encode_document(role.assume_role_policy_document),
        "MaxSessionDuration": role.max_session_duration,
    }
    if role.description is not None:
        out["Description"] = role.description
    if tags is not None:  # detail views (GetRole/CreateRole) only
        out.update(boundary_shape(role.permissions_boundary))
        if tags:
            out["Tags"] = tags
    return out


# --------------------------------------------------------------------------- tags


def _check_tag(tag: dict[str, str]) -> None:
    key, value = tag.get("Key", ""), tag.get("Value", "")
    if not 1 <= len(key) <= 128:
        raise validation_error(key, "tags.member.key", "Member must have length between 1 and 128")
    if len(value) > 256:
        raise validation_error(
            value, "tags.member.value", "Member must have length less than or equal to 256"
        )
    for text, field in ((key, "key"), (value, "value")):
        if any(not (c.isalnum() or c.isspace() or c in _TAG_EXTRA) for c in text):
            raise validation_error(
                text,
                f"tags.member.{field}",
                r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]*",
            )
    if key.lower().startswith("aws:"):
        raise invalid_input("Tag keys starting with 'aws:' are reserved for internal use.")


def check_tags(tags: Sequence[dict[str, str]]) -> None:
    for tag in tags:
        _check_tag(tag)
    keys = [t["Key"].lower() for t in tags]
    if len(keys) != len(set(keys)):
        raise invalid_input("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
    if len(tags) > MAX_TAGS:
        raise limit_exceeded(f"The number of tags has reached the maximum limit of {MAX_TAGS}.")


#: IAM's rules over the shared tag store: keys match without regard to case, at most MAX_TAGS a resource.
_TAG_LIMIT = tag_store.TagLimit(
    MAX_TAGS, lambda: limit_exceeded(f"The number of tags has reached the maximum limit of {MAX_TAGS}.")
)
get_tags = tag_store.tag_list
delete_all_tags = tag_store.drop_tags
move_tags = tag_store.rename_tags


def add_tags(session: Session, arn: str, tags: Sequence[dict[str, str]]) -> None:
    """Add or overwrite tags; IAM tag keys match without regard to case."""
    check_tags(tags)
    tag_store.put_tags(session, arn, tags, fold_case=True, limit=_TAG_LIMIT)


def remove_tags(session: Session, arn: str, keys: Sequence[str]) -> None:
    tag_store.remove_tags(session, arn, keys, fold_case=True)


# --------------------------------------------------------------------------- paging


def _invalid_marker(marker: str) -> AwsError:
    return validation_error(marker, "marker", "Member must be a marker returned by a previous call")


def paginate(
    items: Sequence[T], params: dict[str, Any], key: Callable[[T], str]
) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` (already sorted by ``key``) per Marker / MaxItems.

    The marker is the (opaque) key of the first item not yet returned, so paging
    stays correct when items are added or removed between calls.
    """
    max_items = params.get("MaxItems") or DEFAULT_MAX_ITEMS
    start = 0
    if params.get("Marker"):
        after = decode_token(params["Marker"], _invalid_marker, str)
        start = next((i for i, item in enumerate(items) if key(item) >= after), len(items))
    page = list(items[start : start + max_items])
    truncated = start + max_items < len(items)
    extra: dict[str, Any] = {"IsTruncated": truncated}
    if truncated:
        extra["Marker"] = encode_token(key(items[start + max_items]))
    return page, extra


def paginate_in_order(items: Sequence[T], params: dict[str, Any]) -> tuple[list[T], dict[str, Any]]:
    """Page through items kept in their own order (tags, versions, simulation results)."""
    keyed = [(f"{i:08d}", item) for i, item in enumerate(items)]
    page, extra = paginate(keyed, params, lambda kv: kv[0])
    return [item for _, item in page], extra


def name_key(name: str) -> str:
    # Names are unique case-insensitively, so the folded name is a total order.
    return name.lower()


def paginate_by_name(rows: Sequence[T], params: dict[str, Any]) -> tuple[list[T], dict[str, Any]]:
    """One page of users, roles or groups in name order (any rows with a ``name``)."""
    ordered = sorted(rows, key=_row_name_key)
    return paginate(ordered, params, _row_name_key)


def _row_name_key(row: Any) -> str:
    return name_key(row.name)
