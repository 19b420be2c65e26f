"""Turning normalised fields into a checked `Post`, and keeping the raw event compact.

`build_post` is the one place where sources meet the `Post` model: whatever a source
extracted, the result is either a plausible post or a `PostRejected`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from retrieval.post import MAX_TEXT_CHARS, Post, PostRejected

# The raw event rides along with every post into the store; keep it a note, not a copy.
MAX_RAW_BYTES = 4_096
_MAX_RAW_STRING = 512
_MAX_RAW_DEPTH = 6


def primary_lang(tag: object) -> str | None:
    """The primary subtag of a language tag, lower-cased: `en-US` → `en`; None if unusable."""
    if not isinstance(tag, str):
        return None
    head = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    if not head or len(head) > 8 or not head.isalpha() or not head.isascii():
        return None
    return head


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def build_post(*, now: datetime | None = None, **fields: Any) -> Post:
    """A validated, plausible `Post`; raises `PostRejected` otherwise.

    `now` is the present for the future-date check (default: the wall clock).
    """
    text = fields.get("text")
    if isinstance(text, str):
        if len(text) > MAX_TEXT_CHARS:
            raise PostRejected("text_too_long", f"{len(text)} chars > {MAX_TEXT_CHARS}")
        # Lone surrogates (from JSON `\ud800`) cannot be stored or sent anywhere as UTF-8.
        if _has_surrogates(text):
            raise PostRejected("invalid_text", "text holds unpaired surrogates")
    for key, value in fields.items():
        items = value if isinstance(value, list) else [value]
        if key != "text" and any(isinstance(i, str) and _has_surrogates(i) for i in items):
            raise PostRejected("invalid_text", f"{key} holds unpaired surrogates")
    try:
        post = Post.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "post"
        reason = "missing_field" if first.get("type") == "missing" else "invalid_field"
        raise PostRejected(reason, f"{where}: {first.get('msg', '')}"[:300]) from None
    post.check_plausible(now)
    return post


def _shrink(value: Any, drop: Collection[str], depth: int) -> Any:
    """`value` without dropped keys, empty values, deep nesting and long strings."""
    if isinstance(value, dict):
        if depth >= _MAX_RAW_DEPTH:
            return "…"
        return {
            _clean(str(k)): _shrink(v, drop, depth + 1)
            for k, v in value.items()
            if k not in drop and v is not None and v != [] and v != {}
        }
    if isinstance(value, list):
        if depth >= _MAX_RAW_DEPTH:
            return "…"
        return [_shrink(v, drop, depth + 1) for v in value[:20]]
    if isinstance(value, str):
        value = _clean(value)
        return value[:_MAX_RAW_STRING] + "…" if len(value) > _MAX_RAW_STRING else value
    return value


def _clean(text: str) -> str:
    # The raw event is a note, not data to reject a post over: unpaired surrogates → "?".
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogates(text) else text


def compact_raw(
    event: dict[str, Any], drop: Collection[str] = (), max_bytes: int = MAX_RAW_BYTES
) -> dict[str, Any]:
    """`event` without the keys in `drop` (at any depth), empty values and long strings,
    at most `max_bytes` of JSON; past that, only its top-level scalars are kept."""
    small = _shrink(event, drop, 0)
    if len(json.dumps(small, ensure_ascii=False, default=str)) <= max_bytes:
        return small
    scalars = {k: v for k, v in small.items() if isinstance(v, str | int | float | bool)}
    scalars["truncated"] = True
    while (
        len(scalars) > 1 and len(json.dumps(scalars, ensure_ascii=False, default=str)) > max_bytes
    ):
        scalars.pop(next(k for k in scalars if k != "truncated"))
    return scalars
