"""Resolve an S3DataSource (S3Prefix or ManifestFile) to the objects a job reads."""

from __future__ import annotations

import json
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.storage import files

#: (object info, path relative to the channel or input root)
SourceObject = tuple[Any, str]


def resolve_source(store: Any, source: dict[str, Any], probe: bool = False) -> list[SourceObject]:
    """Every object of the source, in key order; ``probe`` stops at the first (existence check)."""
    uri, kind = source["S3Uri"], source.get("S3DataType", "S3Prefix")
    bucket, prefix = files.parse_s3_uri(uri)
    if kind == "ManifestFile":
        return _manifest(store, uri, bucket, prefix)
    if kind != "S3Prefix":
        raise AwsError("ValidationException", f"S3DataType {kind} is not supported; use S3Prefix or ManifestFile.",
                       400)
    found: list[SourceObject] = []
    try:
        for info in files.iter_objects(store, bucket, prefix):
            if info.key.endswith("/") and info.size == 0:
                continue  # "folder" placeholder objects made by consoles
            relative = info.key[len(prefix):].lstrip("/") or info.key.rsplit("/", 1)[-1]
            found.append((info, relative))
            if probe:
                break
    except AwsError:
        found = []
    if not found:
        raise AwsError(
            "ValidationException",
            f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the bucket '
            "exists in the selected region, that objects exist under that S3 prefix, and that the role has "
            "s3:ListBucket permissions on the bucket.", 400)
    return found


def _manifest(store: Any, uri: str, bucket: str, key: str) -> list[SourceObject]:
    try:
        body = store.open_object(bucket, key)
        manifest = json.loads(b"".join(body.chunks))
        base = manifest[0]["prefix"]
        entries = [str(e) for e in manifest[1:]]
    except AwsError as exc:
        raise AwsError("ValidationException", f"The manifest file {uri} could not be read: {exc.message}",
                       400) from exc
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AwsError("ValidationException", f"The manifest file {uri} is not a valid manifest: expected "
                                              '[{"prefix": "s3://..."}, "key", ...].', 400) from exc
    base_bucket, base_prefix = files.parse_s3_uri(base)
    return [(store.head_object(base_bucket, base_prefix + entry), entry) for entry in entries]


def check_output_bucket(store: Any, uri: str, member: str) -> None:
    bucket, _ = files.parse_s3_uri(uri)
    try:
        store.get_bucket(bucket)
    except AwsError as exc:
        raise AwsError("ValidationException", f"The output bucket {bucket} of {member} does not exist.",
                       400) from exc
