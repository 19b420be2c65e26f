"""The shared list of followed feeds, edited with `/feed` and read by the ingest daemon.

Redis layout (documented in docs/discord.md; the daemon relies on it):
- hash `quipfeed:feeds`: source spec (as `ingest.sources.spec.open_source` takes it) → JSON
  `{"added_by": "<discord user id>", "guild": "<guild id>", "at": "<ISO time>", "label": "…"}`.
- stream `quipfeed:feeds:changes`: one entry per change, fields `op` (`add` | `remove`) and
  `spec`, so a running daemon starts or stops that source without a restart.

`bot` never imports `ingest`: whoever composes the bot passes a `validate(spec)` callable that
raises `ValueError` (e.g. `SourceSpecError`) with a message fit for a user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import redis.asyncio as aioredis

FEEDS_KEY = "quipfeed:feeds"
CHANGES_KEY = "quipfeed:feeds:changes"
MAX_FEEDS = 200
JETSTREAM_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
_TAG = re.compile(r"^#?([\w-]{1,100})$")
_MASTODON_TAG = re.compile(r"^#([\w-]{1,100})@([A-Za-z0-9.-]+\.[A-Za-z]{2,})$")

Validator = Callable[[str], None]


class FeedError(ValueError):
    """A feed that cannot be added or removed; the message says why, for the user."""


@dataclass(frozen=True)
class Feed:
    spec: str
    added_by: str
    guild: str
    at: str
    label: str


def to_spec(kind: str, target: str, *, jetstream_url: str = JETSTREAM_URL) -> tuple[str, str]:
    """(source spec, human label) for what a person typed in `/feed add`.

    kind `bluesky-tag`: `#rust`; `bluesky-account`: a DID (`did:plc:…`); `mastodon-tag`:
    `#python@mastodon.social`; `rss`: an http(s) URL; `spec`: a raw source spec.
    """
    target = target.strip()
    if kind == "bluesky-tag":
        m = _TAG.match(target)
        if not m:
            raise FeedError("a Bluesky hashtag looks like `#rust` (letters, digits, _ or -)")
        spec = f"jetstream:{jetstream_url}?keyword={quote(m[1].lower())}"
        return spec, f"Bluesky #{m[1]}"
    if kind == "bluesky-account":
        if not re.fullmatch(r"did:(plc|web):[A-Za-z0-9._:%-]{1,200}", target):
            raise FeedError(
                "follow a Bluesky account by its DID (`did:plc:…`); a handle such as "
                "alice.bsky.social can be turned into one at https://bsky.social/xrpc/"
                "com.atproto.identity.resolveHandle?handle=alice.bsky.social"
            )
        return f"jetstream:{jetstream_url}?did={quote(target, safe=':')}", f"Bluesky {target}"
    if kind == "mastodon-tag":
        m = _MASTODON_TAG.match(target)
        if not m:
            raise FeedError("a Mastodon tag looks like `#python@mastodon.social`")
        return f"mastodon:https://{m[2].lower()}?tag={quote(m[1])}", f"Mastodon #{m[1]} on {m[2]}"
    if kind == "rss":
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc or " " in target:
            raise FeedError("an RSS feed is an http(s) URL, like https://example.org/feed.xml")
        return f"rss:{target}", f"RSS {parts.netloc}{parts.path}"
    if kind == "spec":
        return target, target
    raise FeedError(f"unknown feed kind {kind!r}")


class FeedRegistry:
    def __init__(self, client: aioredis.Redis, validate: Validator) -> None:
        self.r = client
        self.validate = validate

    async def add(self, spec: str, label: str, *, added_by: int, guild: int | None) -> bool:
        """Follow `spec`; False if it was already followed. Raises `FeedError` for a spec the
        ingester would refuse, or when the list is full."""
        try:
            self.validate(spec)
        except ValueError as e:
            raise FeedError(str(e)) from None
        if await self.r.hexists(FEEDS_KEY, spec):
            return False
        if await self.r.hlen(FEEDS_KEY) >= MAX_FEEDS:
            raise FeedError(f"already following {MAX_FEEDS} feeds; remove one first")
        meta = {
            "added_by": str(added_by),
            "guild": str(guild or ""),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "label": label,
        }
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hsetnx(FEEDS_KEY, spec, json.dumps(meta))
            pipe.xadd(CHANGES_KEY, {"op": "add", "spec": spec}, maxlen=10_000, approximate=True)
            await pipe.execute()
        return True

    async def remove(self, spec: str) -> bool:
        """Stop following `spec`; False if it was not followed."""
        removed = await self.r.hdel(FEEDS_KEY, spec)
        if removed:
            await self.r.xadd(
                CHANGES_KEY, {"op": "remove", "spec": spec}, maxlen=10_000, approximate=True
            )
        return bool(removed)

    async def list(self) -> list[Feed]:
        raw = await self.r.hgetall(FEEDS_KEY)
        out = []
        for k, v in raw.items():
            spec = k.decode() if isinstance(k, bytes) else str(k)
            try:
                meta = json.loads(v)
            except ValueError:
                meta = {}
            out.append(
                Feed(
                    spec=spec,
                    added_by=str(meta.get("added_by", "")),
                    guild=str(meta.get("guild", "")),
                    at=str(meta.get("at", "")),
                    label=str(meta.get("label", spec)),
                )
            )
        return sorted(out, key=lambda f: f.at)
