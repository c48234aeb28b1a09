"""The one tag store: tags of every service live in ``resource_tags``, keyed by ARN.

Services differ only in their rules, which callers pass in: IAM matches keys without
regard to case, Logs and IAM cap the number of tags (each with its own wire error),
S3 replaces whole tag sets. Every function works inside the caller's open session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sagestack.aws.errors import AwsError
from sagestack.db.models.tags import ResourceTag

#: Tags as the wire gives them: ``{"key": "value"}`` (Logs, S3) or ``[{"Key", "Value"}]`` (the others).
Tags = Mapping[str, str] | Sequence[Mapping[str, str]]


class TagLimit(NamedTuple):
    """At most ``count`` tags on a resource, else the service's own ``error()``."""

    count: int
    error: Callable[[], AwsError]


def _pairs(tags: Tags) -> list[tuple[str, str]]:
    if isinstance(tags, Mapping):
        return [(str(k), str(v)) for k, v in tags.items()]
    return [(t["Key"], t.get("Value", "")) for t in tags]


def _rows(session: Session, arn: str) -> list[ResourceTag]:
    return list(session.scalars(select(ResourceTag).where(ResourceTag.resource_arn == arn).order_by(ResourceTag.id)))


def tag_list(session: Session, arn: str) -> list[dict[str, str]]:
    """``[{"Key", "Value"}]`` in the order the tags were first set."""
    return [{"Key": row.key, "Value": row.value} for row in _rows(session, arn)]


def tag_map(session: Session, arn: str) -> dict[str, str]:
    """``{key: value}`` in the order the tags were first set."""
    return {row.key: row.value for row in _rows(session, arn)}


def put_tags(session: Session, arn: str, tags: Tags, *, fold_case: bool = False,
             limit: TagLimit | None = None) -> None:
    """Add tags to ``arn`` or overwrite the values (and the spelling) of keys it has.

    ``fold_case``: keys match without regard to case (IAM). ``limit``: checked on the
    merged set before anything is written.
    """
    pairs = _pairs(tags)
    if not pairs:
        return
    fold: Callable[[str], str] = str.lower if fold_case else str
    existing = {fold(row.key): row for row in _rows(session, arn)}
    if limit is not None and len(set(existing) | {fold(k) for k, _ in pairs}) > limit.count:
        raise limit.error()
    for key, value in pairs:
        row = existing.get(fold(key))
        if row is None:
            existing[fold(key)] = row = ResourceTag(resource_arn=arn, key=key, value=value)
            session.add(row)
        row.key, row.value = key, value
    session.flush()


def replace_tags(session: Session, arn: str, tags: Tags) -> None:
    """Make ``tags`` the whole tag set of ``arn`` (S3's PutBucketTagging / PutObjectTagging)."""
    drop_tags(session, arn)
    session.add_all(ResourceTag(resource_arn=arn, key=k, value=v) for k, v in _pairs(tags))


def remove_tags(session: Session, arn: str, keys: Iterable[str], *, fold_case: bool = False) -> None:
    """Remove the named keys; keys ``arn`` does not have are ignored, as every service does."""
    if not fold_case:
        session.execute(delete(ResourceTag).where(ResourceTag.resource_arn == arn, ResourceTag.key.in_(list(keys))))
        return
    lowered = {k.lower() for k in keys}
    for row in _rows(session, arn):
        if row.key.lower() in lowered:
            session.delete(row)


def drop_tags(session: Session, arns: str | Sequence[str]) -> None:
    """Every tag of ``arns`` (one ARN or several): their resource is gone."""
    wanted = [arns] if isinstance(arns, str) else list(arns)
    session.execute(delete(ResourceTag).where(ResourceTag.resource_arn.in_(wanted)))


def rename_tags(session: Session, old_arn: str, new_arn: str) -> None:
    """Move the tags of a resource whose ARN changed (IAM's UpdateUser/UpdateRole renames)."""
    for row in _rows(session, old_arn):
        row.resource_arn = new_arn
