"""AddTags / ListTags / DeleteTags for every SageMaker resource, keyed by ARN."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from sagestack.db.models.tags import ResourceTag
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import page


def put_tags(session: Any, arn: str, tags: list[dict[str, str]]) -> None:
    """Add or overwrite tags on ``arn`` inside an open transaction."""
    for tag in tags:
        existing = session.scalar(select(ResourceTag).where(ResourceTag.resource_arn == arn,
                                                            ResourceTag.key == tag["Key"]))
        if existing is None:
            session.add(ResourceTag(resource_arn=arn, key=tag["Key"], value=tag.get("Value", "")))
        else:
            existing.value = tag.get("Value", "")


def tags_of(session: Any, arn: str) -> list[dict[str, str]]:
    rows = session.scalars(select(ResourceTag).where(ResourceTag.resource_arn == arn).order_by(ResourceTag.id))
    return [{"Key": row.key, "Value": row.value} for row in rows]


def drop_tags(session: Any, arn: str) -> None:
    session.execute(delete(ResourceTag).where(ResourceTag.resource_arn == arn))


@operation("sagemaker")
def add_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.transaction() as session:
        put_tags(session, params["ResourceArn"], params["Tags"])
        return {"Tags": tags_of(session, params["ResourceArn"])}


@operation("sagemaker")
def list_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        tags = tags_of(session, params["ResourceArn"])
    chunk, token = page(tags, params, default_max=50)
    result: dict[str, Any] = {"Tags": chunk}
    if token:
        result["NextToken"] = token
    return result


@operation("sagemaker")
def delete_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.transaction() as session:
        session.execute(delete(ResourceTag).where(ResourceTag.resource_arn == params["ResourceArn"],
                                                  ResourceTag.key.in_(params["TagKeys"])))
    return {}
