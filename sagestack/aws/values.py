"""Scalar conversions between wire text and Python values, per timestamp format.

Shared by every protocol: timestamps are ``iso8601`` (query/XML bodies),
``rfc822`` (HTTP headers) or ``unixTimestamp`` (JSON bodies).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from sagestack.aws.errors import AwsError


class WireValueError(ValueError):
    """A value on the wire that does not fit its shape's type."""


def parse_timestamp(value: Any) -> datetime:
    """Accept every form botocore may send: epoch numbers, ISO 8601, RFC 822."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise WireValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError) as exc:
        raise WireValueError(f"not a timestamp: {text!r}") from exc


def format_timestamp(value: datetime | float | int, fmt: str) -> Any:
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if fmt == "unixTimestamp":
        return round(value.timestamp(), 3)
    if fmt == "rfc822":
        return format_datetime(value, usegmt=True)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def text_to_scalar(text: str, type_name: str, timestamp_format: str = "iso8601") -> Any:
    """Convert one wire string (query param, header, XML text) to its shape type."""
    try:
        if type_name in ("string", "character"):
            return text
        if type_name in ("integer", "long", "short", "byte"):
            return int(text)
        if type_name in ("float", "double"):
            return float(text)
        if type_name == "boolean":
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise WireValueError(f"not a boolean: {text!r}")
            return lowered == "true"
        if type_name == "timestamp":
            return parse_timestamp(text)
        if type_name == "blob":
            return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise WireValueError(f"{text!r} is not a valid {type_name}") from exc
    return text


def scalar_to_text(value: Any, type_name: str, timestamp_format: str = "iso8601") -> str:
    if type_name == "boolean":
        return "true" if value else "false"
    if type_name == "timestamp":
        return str(format_timestamp(value, timestamp_format))
    if type_name == "blob":
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode()
    if type_name in ("float", "double") and isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def serialization_error(message: str) -> AwsError:
    return AwsError("SerializationException", message, 400)
