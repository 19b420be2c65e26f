"""The one `Post` model every part of quipfeed shares, from the normaliser on.

Its JSON form is the canonical JSON Lines format that `jsonl:` replays read: the same
keys as the public sample data (`id`, `text`, `created_at` required; the rest optional).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A point id derives from the post id, so a replay or a redelivery overwrites, never duplicates.
_POINT_NAMESPACE = uuid.UUID("6f1c2a8e-3b5d-4c1e-9a7f-0d2b4e6f8a10")

MAX_TEXT_CHARS = 10_000
EARLIEST_POST = datetime(2000, 1, 1, tzinfo=UTC)
# Clocks drift and clients lie about createdAt; a day of slack, no more.
FUTURE_SLACK = timedelta(days=1)


class PostRejected(ValueError):
    """A post that cannot be indexed; `reason` is short and stable enough to count by."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def point_id(post_id: str) -> str:
    """The store's point id for a post id: a UUIDv5, stable across runs and machines."""
    return str(uuid.uuid5(_POINT_NAMESPACE, post_id))


class Post(BaseModel):
    """A public post, normalised. Unknown keys in input are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    id: str = Field(min_length=1, max_length=2_000, description="The source's own URI or id.")
    text: str = Field(max_length=MAX_TEXT_CHARS)
    created_at: datetime
    platform: str | None = Field(default=None, description="bluesky, mastodon, rss, twitter …")
    source: str | None = Field(default=None, description="Which feed brought it in.")
    author: str | None = Field(default=None, description="Handle: alice.bsky.social, bob@host")
    author_name: str | None = None
    author_id: str | None = Field(default=None, description="Stable account id (a DID, an acct).")
    lang: str | None = None
    url: str | None = None
    reply_to: str | None = None
    thread_root: str | None = None
    quote_of: str | None = None
    hashtags: list[str] = Field(default_factory=list)
    mentions: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)
    like_count: int | None = None
    repost_count: int | None = None
    reply_count: int | None = None
    topic: str | None = None
    native_id: str | None = Field(
        default=None, description="An id that delete events use when it differs from `id`."
    )
    raw: dict[str, Any] | None = Field(default=None, description="The source event, compact.")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @field_validator("hashtags")
    @classmethod
    def _tags_lower(cls, value: list[str]) -> list[str]:
        return sorted({t.lstrip("#").lower() for t in value if t.strip("# ")})

    @property
    def point_id(self) -> str:
        return point_id(self.id)

    def check_plausible(self, now: datetime | None = None) -> None:
        """Raise `PostRejected` for a post no feed could really have carried."""
        now = now or datetime.now(UTC)
        if self.created_at < EARLIEST_POST:
            raise PostRejected("implausible_date", f"created_at {self.created_at.isoformat()}")
        if self.created_at > now + FUTURE_SLACK:
            raise PostRejected("future_date", f"created_at {self.created_at.isoformat()}")

    def to_jsonl(self) -> str:
        return self.model_dump_json(exclude_none=True, exclude_defaults=False)
