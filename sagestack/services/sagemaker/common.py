"""What every SageMaker resource family shares: ARNs, not-found errors, list paging and sorting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select

from sagestack.arns import iam_arn, sagemaker_arn
from sagestack.authz.roles import SAGEMAKER_PRINCIPAL, service_may_assume
from sagestack.aws.errors import AwsError
from sagestack.db.models.identity import IamRole
from sagestack.services import RequestContext
from sagestack.services.pagination import decode_offset, encode_token

T = TypeVar("T")


def resource_arn(ctx: RequestContext, kind: str, name: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:<kind>/<name>`` (SageMaker lower-cases names in ARNs)."""
    return sagemaker_arn(ctx.region, ctx.account_id, kind, name)


def could_not_find(kind: str, name: str) -> AwsError:
    """The SDK and the waiters expect ValidationException for a missing resource."""
    return AwsError("ValidationException", f'Could not find {kind} "{name}".', 400)


def load_row(session: Any, table: type[T], name: str, kind: str, shown_as: str | None = None) -> T:
    """The row of ``table`` called ``name``, or could_not_find(kind, shown_as or name) when there is none."""
    row = session.get(table, name)
    if row is None:
        raise could_not_find(kind, shown_as or name)
    return row


def require_assumable_role(ctx: RequestContext, arn: str) -> None:
    """An existing role of this account (path and all) whose trust policy lets SageMaker assume it.

    SageMaker checks this when a job, model or notebook is created, before anything exists,
    and answers in these words; the caller's iam:PassRole was checked by the gateway.
    """
    with ctx.platform.db.session() as session:
        role = session.get(IamRole, arn.rsplit("/", 1)[-1])
        trusted = (role is not None and iam_arn(ctx.account_id, "role", role.path, role.name) == arn
                   and service_may_assume(role.assume_role_policy_document, arn))
    if not trusted:
        raise AwsError("ValidationException", f"Could not assume role {arn}. Please ensure that the role exists and "
                                              f"allows principal '{SAGEMAKER_PRINCIPAL}' to assume the role.", 400)


def check_stoppable(kind: str, status: str) -> None:
    """Training and transform jobs stop only while InProgress (tuning jobs answer in words of their own)."""
    if status != "InProgress":
        raise AwsError("ValidationException", f"The request was rejected because the {kind} is in status {status}.",
                       400)


def already_exists(kind: str, name: str, arn: str) -> AwsError:
    return AwsError("ResourceInUse", f"{kind} with name {name} already exists: {arn}", 400)


def _invalid_token(_token: str) -> AwsError:
    return AwsError("ValidationException", "The NextToken is not valid.", 400)


def page(items: Sequence[T], params: dict[str, Any], default_max: int = 10) -> tuple[list[T], str | None]:
    """Cut a page out of an already filtered and sorted list (MaxResults / NextToken)."""
    start = decode_offset(params.get("NextToken"), _invalid_token)
    size = params.get("MaxResults") or default_max
    chunk = list(items[start : start + size])
    more = start + size < len(items)
    return chunk, (encode_token(start + size) if more else None)


def time_filters(params: dict[str, Any], created: Callable[[T], datetime],
                 modified: Callable[[T], datetime]) -> Callable[[T], bool]:
    """The CreationTime/LastModifiedTime Before/After filters every List* operation shares."""
    bounds = [
        (params.get("CreationTimeAfter"), created, lambda v, b: v > b),
        (params.get("CreationTimeBefore"), created, lambda v, b: v < b),
        (params.get("LastModifiedTimeAfter"), modified, lambda v, b: v > b),
        (params.get("LastModifiedTimeBefore"), modified, lambda v, b: v < b),
    ]
    active = [(bound, get, cmp) for bound, get, cmp in bounds if bound is not None]

    def keep(item: T) -> bool:
        return all(cmp(get(item), bound) for bound, get, cmp in active)

    return keep


def name_filter(params: dict[str, Any], name: Callable[[T], str]) -> Callable[[T], bool]:
    needle = (params.get("NameContains") or "").lower()
    return lambda item: needle in name(item).lower()


def sort_items(items: list[T], params: dict[str, Any], keys: dict[str, Callable[[T], Any]],
               default: str = "CreationTime") -> list[T]:
    key = keys.get(params.get("SortBy") or default, keys[default])
    descending = (params.get("SortOrder") or "Descending") == "Descending"
    return sorted(items, key=key, reverse=descending)


#: The sort keys most List* operations offer, on rows with ``created``, ``name`` and ``status``.
ROW_SORT_KEYS: dict[str, Callable[[Any], Any]] = {
    "CreationTime": lambda r: r.created, "Name": lambda r: r.name, "Status": lambda r: r.status}


def rows_with_status(session: Any, table: Any, params: dict[str, Any]) -> list[Any]:
    """The rows of ``table`` (one with a ``status`` column), StatusEquals applied in the query."""
    query = select(table)
    status = params.get("StatusEquals")
    return list(session.scalars(query.where(table.status == status) if status else query))


def page_result(key: str, items: Sequence[T], params: dict[str, Any], summarize: Callable[[T], Any],
                default_max: int = 10) -> dict[str, Any]:
    """One page of ``items`` summarized under ``key``, and NextToken while more remain."""
    chunk, token = page(items, params, default_max)
    result: dict[str, Any] = {key: [summarize(item) for item in chunk]}
    if token:
        result["NextToken"] = token
    return result


def list_result(rows: list[Any], params: dict[str, Any], key: str, summarize: Callable[[Any], dict[str, Any]], *,
                sort_keys: dict[str, Callable[[Any], Any]] = ROW_SORT_KEYS, default_sort: str = "CreationTime",
                modified: Callable[[Any], datetime] = lambda r: r.last_modified,
                keep: Callable[[Any], bool] | None = None, sort_params: dict[str, Any] | None = None,
                ) -> dict[str, Any]:
    """What every List* of named rows answers: the time and name filters (and ``keep``), the sort
    (``sort_params`` when the operation has defaults of its own), one page, its summaries, NextToken."""
    keeps = [time_filters(params, lambda r: r.created, modified), name_filter(params, lambda r: r.name)]
    if keep is not None:
        keeps.append(keep)
    kept = [r for r in rows if all(k(r) for k in keeps)]
    ordered = sort_items(kept, sort_params or params, sort_keys, default_sort)
    return page_result(key, ordered, params, summarize)
