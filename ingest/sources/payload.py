"""Reading raw payloads: bytes to text, text to a JSON object, timestamps to UTC.

Every failure is a `PostRejected` with a short reason, so a normaliser built on these
never lets a `UnicodeDecodeError`, `JSONDecodeError` or `TypeError` escape.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from retrieval.post import PostRejected

# A feed event larger than this is not a post; refusing it early bounds parse cost.
MAX_PAYLOAD_BYTES = 1_000_000


def decode_payload(payload: bytes | str) -> str:
    """The payload as text; bytes must be valid UTF-8."""
    if isinstance(payload, bytes):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PostRejected("payload_too_large", f"{len(payload)} bytes")
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PostRejected("invalid_utf8", str(exc)) from None
    if not isinstance(payload, str):
        raise PostRejected("malformed_payload", f"payload is {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PostRejected("payload_too_large", f"{len(payload)} chars")
    return payload


def load_json_object(payload: bytes | str) -> dict[str, Any]:
    """The payload parsed as one JSON object."""
    text = decode_payload(payload)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PostRejected("malformed_json", str(exc)[:200]) from None
    if not isinstance(value, dict):
        raise PostRejected("malformed_json", f"expected an object, got {type(value).__name__}")
    return value


def get_str(obj: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """`obj[key]` when it is a string; a missing or non-string value is None (or, when
    `required`, a rejection)."""
    value = obj.get(key)
    if isinstance(value, str):
        return value
    if required:
        if value is None:
            raise PostRejected("missing_field", key)
        raise PostRejected("invalid_field", f"{key} is {type(value).__name__}")
    return None


def get_dict(obj: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
    """`obj[key]` when it is an object, else {} (or, when `required`, a rejection)."""
    value = obj.get(key)
    if isinstance(value, dict):
        return value
    if required:
        raise PostRejected("missing_field", key)
    return {}


def parse_time(value: object, field: str = "created_at") -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (naive input is taken as UTC)."""
    if not isinstance(value, str) or not value:
        raise PostRejected("missing_field" if value is None else "invalid_field", field)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PostRejected("invalid_date", f"{field}={value[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise PostRejected("invalid_date", f"{field}={value[:64]!r}") from None
