"""RSS and Atom feeds, polled (`rss:https://…`).

Each poll is a conditional GET (`If-None-Match` / `If-Modified-Since`); a 304 costs
nothing. Entries are de-duplicated by id (else link) across polls. The cursor is the
list of entry ids of the latest document that have been delivered, so a restart does
not re-deliver what the feed still carries. In `finite` mode `events` makes one poll
(what `--once` wants), retrying a failing fetch `max_attempts` times before giving up
with an error log; otherwise it polls every `interval_s` and retries forever.

An event's payload is feedparser's view of one entry, as JSON (feedparser does not keep
the entry's XML), with the feed's title/link/language and the fetch time added.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx

from ingest.changes import Change, Upsert
from ingest.sources import RawEvent, SourceSpecError
from ingest.sources.backoff import Backoff
from ingest.sources.html_text import html_to_text
from ingest.sources.payload import get_dict, get_str, load_json_object, parse_time
from ingest.sources.post_build import build_post, compact_raw, primary_lang
from retrieval.post import MAX_TEXT_CHARS, PostRejected

logger = logging.getLogger(__name__)

_MAX_SEEN = 5_000
_MAX_CURSOR_IDS = 500
_MAX_FEED_BYTES = 20 * 1024 * 1024


def _iso(parsed: Any) -> str | None:
    if isinstance(parsed, time.struct_time):
        return datetime(*parsed[:6], tzinfo=UTC).isoformat()
    return None


def _entry_json(entry: Any, feed: Any, fetched_at: str) -> dict[str, Any]:
    """The JSON-able fields of a feedparser entry that a post is made of."""
    content = [c.get("value") for c in entry.get("content", []) if isinstance(c.get("value"), str)]
    return {
        "id": entry.get("id") or None,
        "link": entry.get("link") or None,
        "links": [ln.get("href") for ln in entry.get("links", []) if ln.get("href")],
        "title": entry.get("title") or None,
        "summary": entry.get("summary") or None,
        "content": content or None,
        "published": _iso(entry.get("published_parsed")),
        "updated": _iso(entry.get("updated_parsed")),
        "author": entry.get("author") or None,
        "tags": [t.get("term") for t in entry.get("tags", []) if t.get("term")],
        "feed": {
            "title": feed.get("title") or None,
            "link": feed.get("link") or None,
            "language": feed.get("language") or None,
        },
        "fetched_at": fetched_at,
    }


def _entry_key(entry: dict[str, Any]) -> str:
    return str(entry.get("id") or entry.get("link") or entry.get("title") or "")


class RssSource:
    """One RSS or Atom feed URL."""

    def __init__(
        self,
        spec: str,
        *,
        interval_s: float = 300.0,
        finite: bool = False,
        backoff: Backoff | None = None,
        timeout_s: float = 20.0,
        max_attempts: int = 3,
    ) -> None:
        self._spec = spec
        self.url = spec.removeprefix("rss:")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceSpecError(
                f"rss spec needs an http(s) feed URL, e.g. rss:https://example.org/feed.xml; "
                f"got {spec!r}"
            )
        if interval_s <= 0:
            raise SourceSpecError(f"rss interval_s must be positive, got {interval_s}")
        self.host = parts.hostname
        self.interval_s = interval_s
        self._finite = finite
        self._backoff = backoff or Backoff(initial=2.0, cap=300.0)
        self._timeout_s = timeout_s
        self._max_attempts = max(1, max_attempts)
        self.etag: str | None = None
        self.modified: str | None = None

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def finite(self) -> bool:
        return self._finite

    async def events(self, cursor: str | None) -> AsyncIterator[RawEvent]:
        seen: OrderedDict[str, None] = OrderedDict.fromkeys(_cursor_ids(cursor, self._spec))
        backoff = self._backoff
        headers = {"User-Agent": "quipfeed (+https://github.com/quipfeed)"}
        async with httpx.AsyncClient(
            timeout=self._timeout_s, follow_redirects=True, headers=headers
        ) as client:
            while True:
                try:
                    entries = await self._poll(client)
                except (httpx.HTTPError, OSError) as exc:
                    delay = backoff.next_delay()
                    if self._finite and backoff.attempts >= self._max_attempts:
                        logger.error(
                            "rss feed unreachable, giving up this poll",
                            extra={"source": self._spec, "error": str(exc)[:300]},
                        )
                        return
                    logger.info(
                        "rss retrying",
                        extra={
                            "source": self._spec,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                            "attempt": backoff.attempts,
                            "delay_s": round(delay, 3),
                        },
                    )
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                if entries is not None:
                    in_document = [_entry_key(e) for e in entries]
                    for entry in entries:
                        key = _entry_key(entry)
                        if key in seen:
                            continue
                        seen[key] = None
                        while len(seen) > _MAX_SEEN:
                            seen.popitem(last=False)
                        delivered = [k for k in in_document if k in seen][-_MAX_CURSOR_IDS:]
                        yield RawEvent(
                            payload=json.dumps(entry, ensure_ascii=False),
                            cursor=json.dumps({"seen": delivered}, ensure_ascii=False),
                            kind="entry",
                        )
                if self._finite:
                    return
                await asyncio.sleep(self.interval_s)

    async def _poll(self, client: httpx.AsyncClient) -> list[dict[str, Any]] | None:
        """The feed's entries, oldest first; None when the server says nothing changed."""
        headers: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.modified:
            headers["If-Modified-Since"] = self.modified
        response = await client.get(self.url, headers=headers)
        if response.status_code == 304:
            logger.debug("rss not modified", extra={"source": self._spec})
            return None
        response.raise_for_status()
        if len(response.content) > _MAX_FEED_BYTES:
            raise httpx.DecodingError(f"feed larger than {_MAX_FEED_BYTES} bytes")
        self.etag = response.headers.get("etag")
        self.modified = response.headers.get("last-modified")
        # feedparser is CPU-bound and synchronous; a large feed should not stall the loop.
        parsed = await asyncio.to_thread(feedparser.parse, response.content)
        fetched_at = datetime.now(UTC).isoformat()
        entries = [_entry_json(e, parsed.feed, fetched_at) for e in parsed.entries]
        if parsed.get("bozo") and not entries:
            logger.warning(
                "rss document not parseable",
                extra={"source": self._spec, "error": str(parsed.get("bozo_exception"))[:300]},
            )
        if entries and all(e["published"] or e["updated"] for e in entries):
            entries.sort(key=lambda e: e["published"] or e["updated"])
        else:
            entries.reverse()  # feeds list newest first
        logger.info("rss polled", extra={"source": self._spec, "entries": len(entries)})
        return entries

    def normalise(self, event: RawEvent) -> list[Change]:
        entry = load_json_object(event.payload)
        post_id = get_str(entry, "id") or get_str(entry, "link")
        if not post_id:
            raise PostRejected("missing_field", "id")
        title = (get_str(entry, "title") or "").strip()
        content = entry.get("content")
        html = get_str(entry, "summary") or (
            content[0]
            if isinstance(content, list) and content and isinstance(content[0], str)
            else ""
        )
        body, links = html_to_text(html)
        text = body if not title or body.startswith(title) else f"{title}\n\n{body}".strip()
        if len(text) > MAX_TEXT_CHARS:
            # Feed entries are articles, not posts: keep the head rather than lose the entry.
            text = text[: MAX_TEXT_CHARS - 1] + "…"
        stamp = entry.get("published") or entry.get("updated") or entry.get("fetched_at")
        link = get_str(entry, "link")
        entry_links = entry.get("links")
        all_links = [link] if link else []
        if isinstance(entry_links, list):
            all_links += [x for x in entry_links if isinstance(x, str)]
        tags = entry.get("tags")
        feed = get_dict(entry, "feed")
        post = build_post(
            id=post_id,
            source=f"rss:{self.host}",
            platform="rss",
            author=get_str(entry, "author"),
            author_name=get_str(entry, "author"),
            text=text,
            created_at=parse_time(stamp, "published"),
            lang=primary_lang(feed.get("language")),
            url=link if link and link.startswith(("http://", "https://")) else None,
            hashtags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
            links=list(dict.fromkeys(x for x in all_links + links if x.startswith("http"))),
            raw=compact_raw(entry, drop={"summary", "content"}),
        )
        return [Upsert(post)]


def _cursor_ids(cursor: str | None, spec: str) -> list[str]:
    if not cursor:
        return []
    try:
        value = json.loads(cursor)
        ids = value["seen"]
        if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
            return ids
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    logger.warning("rss cursor unusable, ignoring it", extra={"source": spec})
    return []
