"""IAM managed policies: CRUD, versions, tags, and who uses them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from sagestack.authz.principals import PRINCIPAL_MODELS
from sagestack.db.base import utcnow
from sagestack.db.models.identity import (
    IamRole,
    IamUser,
    ManagedPolicy,
    PolicyAttachment,
    PolicyVersion,
)
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    ENTITIES,
    ROLE,
    SERVICE,
    USER,
    Entity,
    access_denied,
    add_tags,
    already_exists,
    check_name,
    check_path,
    check_path_prefix,
    check_policy_path,
    check_tags,
    db,
    delete_all_tags,
    delete_conflict,
    encode_document,
    get_tags,
    limit_exceeded,
    name_key,
    no_such_entity,
    paginate,
    paginate_in_order,
    parse_document,
    policy_arn,
    random_id,
    remove_tags,
    require_policy,
    significant_size,
    validation_error,
)

MAX_VERSIONS = 5
#: AWS's quota on a managed policy document (non-whitespace characters).
MAX_POLICY_SIZE = 6144


# --------------------------------------------------------------------------- usage counts


def attachment_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(PolicyAttachment.policy_arn, func.count()).group_by(PolicyAttachment.policy_arn)
    )
    return {arn: count for arn, count in rows}


def boundary_counts(session: Session) -> dict[str, int]:
    counts: dict[str, int] = {}
    for model in (IamUser, IamRole):
        rows = session.execute(
            select(model.permissions_boundary, func.count())
            .where(model.permissions_boundary.is_not(None))
            .group_by(model.permissions_boundary)
        )
        for arn, count in rows:
            counts[arn] = counts.get(arn, 0) + count
    return counts


def policy_shape(
    policy: ManagedPolicy, attachments: int, boundaries: int, detail: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "PolicyName": policy.name,
        "PolicyId": policy.policy_id,
        "Arn": policy.arn,
        "Path": policy.path,
        "DefaultVersionId": policy.default_version_id,
        "AttachmentCount": attachments,
        "PermissionsBoundaryUsageCount": boundaries,
        "IsAttachable": True,
        "CreateDate": policy.created,
        "UpdateDate": policy.updated,
    }
    # Description is part of the detail view only (GetPolicy/CreatePolicy), as in AWS.
    if detail and policy.description:
        out["Description"] = policy.description
    return out


def _detail(session: Session, policy: ManagedPolicy) -> dict[str, Any]:
    shape = policy_shape(
        policy,
        attachment_counts(session).get(policy.arn, 0),
        boundary_counts(session).get(policy.arn, 0),
        detail=True,
    )
    tags = get_tags(session, policy.arn)
    if tags:
        shape["Tags"] = tags
    return shape


def _require_local(ctx: RequestContext, policy: ManagedPolicy, action: str) -> None:
    """AWS managed policies belong to AWS; nobody in the account may change them."""
    if policy.aws_managed:
        raise access_denied(ctx, action, f"policy {policy.arn}")


def _check_document(document: str) -> None:
    parse_document(document)
    if significant_size(document) > MAX_POLICY_SIZE:
        raise limit_exceeded(f"Cannot exceed quota for PolicySize: {MAX_POLICY_SIZE}")


# --------------------------------------------------------------------------- versions


def add_version(session: Session, policy: ManagedPolicy, document: str, set_default: bool) -> PolicyVersion:
    """Store a new version (v<n>, never reused) and optionally make it the default."""
    version = PolicyVersion(
        policy_arn=policy.arn,
        version_id=f"v{policy.next_version_number}",
        document=document,
        is_default=False,
        created=utcnow(),
    )
    policy.next_version_number += 1
    policy.updated = version.created
    session.add(version)
    session.flush()
    if set_default:
        make_default(session, policy, version)
    return version


def make_default(session: Session, policy: ManagedPolicy, version: PolicyVersion) -> None:
    for other in versions_of(session, policy.arn):
        other.is_default = other.version_id == version.version_id
    policy.default_version_id = version.version_id
    policy.document = version.document


def versions_of(session: Session, arn: str) -> list[PolicyVersion]:
    rows = list(session.scalars(select(PolicyVersion).where(PolicyVersion.policy_arn == arn)))
    # Newest first, as ListPolicyVersions answers.
    rows.sort(key=lambda v: int(v.version_id[1:].split(".")[0]), reverse=True)
    return rows


def _require_version(session: Session, arn: str, version_id: str) -> PolicyVersion:
    version = session.scalars(
        select(PolicyVersion).where(PolicyVersion.policy_arn == arn, PolicyVersion.version_id == version_id)
    ).first()
    if version is None:
        raise no_such_entity(f"Policy {arn} version {version_id} does not exist or is not attachable.")
    return version


def _version_shape(version: PolicyVersion, with_document: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "VersionId": version.version_id,
        "IsDefaultVersion": version.is_default,
        "CreateDate": version.created,
    }
    if with_document:
        out["Document"] = encode_document(version.document)
    return out


def new_policy(
    session: Session,
    arn: str,
    name: str,
    path: str,
    document: str,
    description: str | None = None,
    aws_managed: bool = False,
    policy_id: str | None = None,
) -> ManagedPolicy:
    """Insert a managed policy with its first version (v1, the default)."""
    now = utcnow()
    policy = ManagedPolicy(
        arn=arn,
        name=name,
        policy_id=policy_id or random_id("ANPA"),
        path=path,
        description=description,
        document=document,
        default_version_id="v1",
        next_version_number=2,
        aws_managed=aws_managed,
        created=now,
        updated=now,
    )
    session.add(policy)
    session.flush()
    session.add(
        PolicyVersion(policy_arn=arn, version_id="v1", document=document, is_default=True, created=now)
    )
    session.flush()
    return policy


# --------------------------------------------------------------------------- policies


@operation(SERVICE)
def create_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name, path = params["PolicyName"], params.get("Path") or "/"
    check_name(name, "policyName", 128)
    check_policy_path(path)
    description = params.get("Description")
    if description is not None and len(description) > 1000:
        raise validation_error(
            description, "description", "Member must have length less than or equal to 1000"
        )
    tags = params.get("Tags") or []
    check_tags(tags)
    _check_document(params["PolicyDocument"])
    with db(ctx).transaction() as session:
        # Names are unique within the account whatever the path.
        clash = session.scalars(
            select(ManagedPolicy).where(
                ManagedPolicy.aws_managed.is_(False), func.lower(ManagedPolicy.name) == name.lower()
            )
        ).first()
        if clash is not None:
            raise already_exists(f"A policy called {name} already exists. Duplicate names are not allowed.")
        arn = policy_arn(ctx.account_id, path, name)
        policy = new_policy(session, arn, name, path, params["PolicyDocument"], description)
        add_tags(session, arn, tags)
        return {"Policy": _detail(session, policy)}


@operation(SERVICE)
def get_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        return {"Policy": _detail(session, require_policy(session, params["PolicyArn"]))}


@operation(SERVICE)
def list_policies(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    scope = params.get("Scope") or "All"
    prefix = params.get("PathPrefix") or "/"
    check_path_prefix(prefix)
    usage = params.get("PolicyUsageFilter")
    with db(ctx).session() as session:
        attached, bounds = attachment_counts(session), boundary_counts(session)
        policies = [p for p in session.scalars(select(ManagedPolicy)) if p.path.startswith(prefix)]
    if scope == "AWS":
        policies = [p for p in policies if p.aws_managed]
    elif scope == "Local":
        policies = [p for p in policies if not p.aws_managed]
    if params.get("OnlyAttached"):
        counts = bounds if usage == "PermissionsBoundary" else attached
        policies = [p for p in policies if counts.get(p.arn)]
    policies.sort(key=_policy_key)
    page, extra = paginate(policies, params, _policy_key)
    shapes = [policy_shape(p, attached.get(p.arn, 0), bounds.get(p.arn, 0)) for p in page]
    return {"Policies": shapes, **extra}


def _policy_key(policy: ManagedPolicy) -> str:
    # AWS and local policies may share a name; the ARN breaks the tie.
    return f"{name_key(policy.name)}|{policy.arn}"


@operation(SERVICE)
def delete_policy(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        policy = require_policy(session, params["PolicyArn"])
        _require_local(ctx, policy, "DeletePolicy")
        in_use = attachment_counts(session).get(policy.arn, 0) + boundary_counts(session).get(policy.arn, 0)
        if in_use:
            raise delete_conflict("Cannot delete a policy attached to entities.")
        if len(versions_of(session, policy.arn)) > 1:
            raise delete_conflict(
                "This policy has more than one version. Before you delete a policy, you must delete "
                "the policy's versions. The default version is deleted with the policy."
            )
        session.execute(delete(PolicyVersion).where(PolicyVersion.policy_arn == policy.arn))
        delete_all_tags(session, policy.arn)
        session.delete(policy)
    return None


# --------------------------------------------------------------------------- version operations


@operation(SERVICE)
def create_policy_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).transaction() as session:
        policy = require_policy(session, params["PolicyArn"])
        _require_local(ctx, policy, "CreatePolicyVersion")
        _check_document(params["PolicyDocument"])
        if len(versions_of(session, policy.arn)) >= MAX_VERSIONS:
            raise limit_exceeded(
                f"A managed policy can have up to {MAX_VERSIONS} versions. "
                "Before you create a new version, you must delete an existing version."
            )
        version = add_version(session, policy, params["PolicyDocument"], bool(params.get("SetAsDefault")))
        return {"PolicyVersion": _version_shape(version, with_document=False)}


@operation(SERVICE)
def get_policy_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        policy = require_policy(session, params["PolicyArn"])
        version = _require_version(session, policy.arn, params["VersionId"])
        return {"PolicyVersion": _version_shape(version, with_document=True)}


@operation(SERVICE)
def list_policy_versions(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        policy = require_policy(session, params["PolicyArn"])
        versions = versions_of(session, policy.arn)
    page, extra = paginate_in_order(versions, params)
    return {"Versions": [_version_shape(v, with_document=False) for v in page], **extra}


@operation(SERVICE)
def delete_policy_version(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        policy = require_policy(session, params["PolicyArn"])
        _require_local(ctx, policy, "DeletePolicyVersion")
        version = _require_version(session, policy.arn, params["VersionId"])
        if version.is_default:
            raise delete_conflict("Cannot delete the default version of a policy.")
        session.delete(version)
    return None


@operation(SERVICE)
def set_default_policy_version(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        policy = require_policy(session, params["PolicyArn"])
        _require_local(ctx, policy, "SetDefaultPolicyVersion")
        make_default(session, policy, _require_version(session, policy.arn, params["VersionId"]))
    return None


# --------------------------------------------------------------------------- tags


@operation(SERVICE)
def tag_policy(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        policy = require_policy(session, params["PolicyArn"])
        _require_local(ctx, policy, "TagPolicy")
        add_tags(session, policy.arn, params["Tags"])
    return None


@operation(SERVICE)
def untag_policy(ctx: RequestContext, params: dict[str, Any]) -> None:
    with db(ctx).transaction() as session:
        policy = require_policy(session, params["PolicyArn"])
        _require_local(ctx, policy, "UntagPolicy")
        remove_tags(session, policy.arn, params["TagKeys"])
    return None


@operation(SERVICE)
def list_policy_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with db(ctx).session() as session:
        policy = require_policy(session, params["PolicyArn"])
        tags = get_tags(session, policy.arn)
    page, extra = paginate_in_order(tags, params)
    return {"Tags": page, **extra}


# --------------------------------------------------------------------------- usage


@operation(SERVICE)
def list_entities_for_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    entity_filter = params.get("EntityFilter")
    prefix = params.get("PathPrefix") or "/"
    check_path(prefix, "pathPrefix")
    with db(ctx).session() as session:
        policy = require_policy(session, params["PolicyArn"])
        entities = _entities_using(session, policy.arn, params.get("PolicyUsageFilter"))
    if entity_filter is not None:
        # A policy is used by users, roles and groups only: the policy filters match nothing.
        entities = [(e, row) for e, row in entities if e.label == entity_filter]
    entities = [(e, row) for e, row in entities if row.path.startswith(prefix)]
    entities.sort(key=_entity_key)
    page, extra = paginate(entities, params, _entity_key)
    out: dict[str, Any] = {f"Policy{e.label}s": [] for e in ENTITIES.values()}
    for entity, row in page:
        out[f"Policy{entity.label}s"].append(
            {entity.param: row.name, f"{entity.label}Id": entity.id_of(row)}
        )
    return {**out, **extra}


def _entity_key(item: tuple[Entity, Any]) -> str:
    return f"{item[0].label}|{name_key(item[1].name)}"


def _entities_using(session: Session, arn: str, usage: str | None) -> list[tuple[Entity, Any]]:
    """Every user, role and group using the policy: attached (PermissionsPolicy), as a
    boundary (PermissionsBoundary), or either when ``usage`` is None."""
    found: dict[tuple[str, str], tuple[Entity, Any]] = {}
    if usage != "PermissionsBoundary":
        for att in session.scalars(select(PolicyAttachment).where(PolicyAttachment.policy_arn == arn)):
            row = session.get(PRINCIPAL_MODELS[att.principal_type], att.principal_name)
            if row is not None:
                found[(att.principal_type, row.name)] = (ENTITIES[att.principal_type], row)
    if usage != "PermissionsPolicy":
        for model, entity in ((IamUser, USER), (IamRole, ROLE)):  # groups have no boundary
            for row in session.scalars(select(model).where(model.permissions_boundary == arn)):
                found[(entity.principal_type, row.name)] = (entity, row)
    return list(found.values())
