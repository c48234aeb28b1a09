"""AddTags / ListTags / DeleteTags for every SageMaker resource, keyed by ARN."""

from __future__ import annotations

from typing import Any

from sagestack.logic.tags import put_tags, remove_tags, tag_list
from sagestack.services import RequestContext, operation
from sagestack.services.sagemaker.common import page_result


@operation("sagemaker")
def add_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.transaction() as session:
        put_tags(session, params["ResourceArn"], params["Tags"])
        return {"Tags": tag_list(session, params["ResourceArn"])}


@operation("sagemaker")
def list_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.session() as session:
        tags = tag_list(session, params["ResourceArn"])
    return page_result("Tags", tags, params, lambda tag: tag, default_max=50)


@operation("sagemaker")
def delete_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.platform.db.transaction() as session:
        remove_tags(session, params["ResourceArn"], params["TagKeys"])
    return {}
