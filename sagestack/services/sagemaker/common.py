"""What every SageMaker resource family shares: ARNs, not-found errors, list paging and sorting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sagestack.arns import sagemaker_arn
from sagestack.aws.errors import AwsError
from sagestack.services import RequestContext
from sagestack.services.pagination import decode_offset, encode_token

T = TypeVar("T")


def resource_arn(ctx: RequestContext, kind: str, name: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:<kind>/<name>`` (SageMaker lower-cases names in ARNs)."""
    return sagemaker_arn(ctx.region, ctx.account_id, kind, name)


def could_not_find(kind: str, name: str) -> AwsError:
    """The SDK and the waiters expect ValidationException for a missing resource."""
    return AwsError("ValidationException", f'Could not find {kind} "{name}".', 400)


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
