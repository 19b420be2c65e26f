"""Mastodon statuses from the streaming API over SSE (`mastodon:https://host[?tag=…]`).

Streams `/api/v1/streaming/public` (or `/hashtag?tag=`), with `Authorization: Bearer`
when a token is given (Mastodon ≥ 4.2 needs one for these streams). Mastodon streams
have no cursor: the cursor here is the highest local status id seen, and after every
(re)connect the source first pages `GET /api/v1/timelines/public?min_id=<cursor>`
(or `/timelines/tag/<tag>`) so that statuses posted while it was away are not lost.
Backfill runs after the stream is open, so nothing falls between the two; overlaps are
redelivered and absorbed by idempotent point ids. Deletes missed while away are not
recoverable (Mastodon offers no history of them).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from ingest.changes import Change, Delete, Upsert
from ingest.sources import RawEvent, SourceSpecError
from ingest.sources.backoff import Backoff
from ingest.sources.html_text import html_to_text
from ingest.sources.payload import decode_payload, get_dict, get_str, load_json_object, parse_time
from ingest.sources.post_build import build_post, compact_raw, primary_lang
from ingest.sources.sse import sse_messages
from retrieval.post import Post, PostRejected

logger = logging.getLogger(__name__)

PAGE_LIMIT = 40  # the API's maximum page size
_POST_EVENTS = {"update", "status.update"}
# Events a user stream may carry that never concern public posts.
_IGNORED_EVENTS = {
    "notification",
    "filters_changed",
    "conversation",
    "announcement",
    "announcement.reaction",
    "announcement.delete",
    "notifications_merged",
    "encrypted_message",
}
_RAW_DROP = {
    "emojis",
    "avatar",
    "avatar_static",
    "header",
    "header_static",
    "note",
    "fields",
    "moved",
    "application",
    "preview_url",
    "remote_url",
    "preview_remote_url",
    "blurhash",
    "meta",
    "roles",
    "filtered",
    "html",
    "image",
    "embed_url",
    "text_url",
}


def _id_order(local_id: str) -> tuple[int, str]:
    # Mastodon ids are decimal snowflakes; compare as numbers (length first, then digits).
    return (len(local_id), local_id)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class MastodonSource:
    """The public (or one hashtag's) timeline of one Mastodon server."""

    finite = False

    def __init__(
        self,
        spec: str,
        *,
        token: str | None = None,
        backoff: Backoff | None = None,
        read_timeout_s: float = 90.0,
        max_backfill_pages: int = 25,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self._spec = spec
        parts = urlsplit(spec.removeprefix("mastodon:"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceSpecError(
                f"mastodon spec needs an http(s) server URL, e.g. "
                f"mastodon:https://mastodon.social?tag=python; got {spec!r}"
            )
        if parts.path not in ("", "/"):
            raise SourceSpecError(f"mastodon spec takes the server's root URL, no path: {spec!r}")
        query = dict(parse_qsl(parts.query))
        unknown = set(query) - {"tag", "token"}
        if unknown:
            raise SourceSpecError(f"mastodon spec: unknown option(s) {sorted(unknown)} in {spec!r}")
        self.host = parts.hostname
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.tag = query.get("tag", "").lstrip("#") or None
        self._token = token or query.get("token") or None
        self._backoff = backoff or Backoff(initial=1.0, cap=60.0)
        self._read_timeout_s = read_timeout_s
        self._max_backfill_pages = max_backfill_pages
        self._page_limit = min(PAGE_LIMIT, max(1, page_limit))

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def stream_url(self) -> str:
        if self.tag:
            return f"{self.base_url}/api/v1/streaming/hashtag?tag={quote(self.tag)}"
        return f"{self.base_url}/api/v1/streaming/public"

    @property
    def backfill_url(self) -> str:
        if self.tag:
            return f"{self.base_url}/api/v1/timelines/tag/{quote(self.tag, safe='')}"
        return f"{self.base_url}/api/v1/timelines/public"

    async def events(self, cursor: str | None) -> AsyncIterator[RawEvent]:
        """Stream events from now, after backfilling from `cursor` (a local status id)."""
        last_id = cursor if cursor and cursor.isdigit() else None
        if cursor and last_id is None:
            logger.warning("mastodon cursor unusable, starting live", extra={"source": self._spec})
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        timeout = httpx.Timeout(10.0, read=self._read_timeout_s)
        backoff = self._backoff
        async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
            while True:
                error: str | None = None
                try:
                    async with client.stream(
                        "GET", self.stream_url, headers={"Accept": "text/event-stream"}
                    ) as response:
                        if response.status_code != 200:
                            body = (await response.aread())[:200].decode("utf-8", "replace")
                            error = f"HTTP {response.status_code}: {body}"
                            if response.status_code in (401, 403):
                                logger.error(
                                    "mastodon refused the token; check the token option",
                                    extra={"source": self._spec, "status": response.status_code},
                                )
                        else:
                            logger.info(
                                "mastodon stream connected",
                                extra={"source": self._spec, "cursor": last_id},
                            )
                            backoff.reset()
                            if last_id is not None:
                                async for event in self._backfill(client, last_id):
                                    last_id = event.cursor
                                    yield event
                            async for message in sse_messages(response.aiter_lines()):
                                if message.event == "update":
                                    last_id = _newer(last_id, _peek_id(message.data))
                                yield RawEvent(
                                    payload=message.data, cursor=last_id, kind=message.event
                                )
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                delay = backoff.next_delay()
                logger.info(
                    "mastodon reconnecting",
                    extra={
                        "source": self._spec,
                        "error": error or "server closed the stream",
                        "attempt": backoff.attempts,
                        "delay_s": round(delay, 3),
                        "cursor": last_id,
                    },
                )
                await asyncio.sleep(delay)

    async def _backfill(self, client: httpx.AsyncClient, since: str) -> AsyncIterator[RawEvent]:
        """Statuses newer than `since`, oldest first, as `update` events."""
        min_id = since
        for _ in range(self._max_backfill_pages):
            response = await client.get(
                self.backfill_url, params={"min_id": min_id, "limit": self._page_limit}
            )
            response.raise_for_status()
            page = response.json()
            if not isinstance(page, list):
                raise ValueError(f"timeline page is {type(page).__name__}, not a list")
            statuses = [s for s in page if isinstance(s, dict) and isinstance(s.get("id"), str)]
            statuses.sort(key=lambda s: _id_order(s["id"]))
            for status in statuses:
                min_id = _newer(min_id, status["id"]) or min_id
                yield RawEvent(
                    payload=json.dumps(status, ensure_ascii=False), cursor=min_id, kind="update"
                )
            logger.info(
                "mastodon backfilled a page",
                extra={"source": self._spec, "statuses": len(statuses), "cursor": min_id},
            )
            if len(page) < self._page_limit:
                return

    def normalise(self, event: RawEvent) -> list[Change]:
        kind = event.kind
        if kind in _POST_EVENTS:
            return [Upsert(self.status_to_post(load_json_object(event.payload)))]
        if kind == "delete":
            local_id = decode_payload(event.payload).strip().strip('"')
            if not local_id or len(local_id) > 64 or not local_id.isalnum():
                raise PostRejected("invalid_field", f"delete id {local_id[:80]!r}")
            return [Delete(native_id=f"mastodon:{self.host}:{local_id}")]
        if kind in _IGNORED_EVENTS:
            return []
        raise PostRejected("unknown_event_kind", f"event={str(kind)[:40]!r}")

    def status_to_post(self, status: dict[str, Any]) -> Post:
        """The post a Status entity shows; for a boost, the boosted status."""
        target = status["reblog"] if isinstance(status.get("reblog"), dict) else status
        uri = get_str(target, "uri", required=True)
        local_id = get_str(target, "id", required=True)
        content = get_str(target, "content", required=True)
        assert uri is not None and local_id is not None and content is not None
        text, links = html_to_text(content)
        account = get_dict(target, "account", required=True)
        acct = get_str(account, "acct", required=True)
        assert acct is not None
        if "@" not in acct:
            # Local accounts have a bare `acct`; their home is the account URL's host.
            home = urlsplit(get_str(account, "url") or "").hostname or self.host
            acct = f"{acct}@{home}"
        card_url = get_str(get_dict(target, "card"), "url")
        if card_url and card_url.startswith(("http://", "https://")):
            links.append(card_url)
        quoted = get_dict(get_dict(target, "quote"), "quoted_status")
        return build_post(
            id=uri,
            source=f"mastodon:{self.host}",
            platform="mastodon",
            author=acct,
            author_name=get_str(account, "display_name") or None,
            author_id=acct,
            text=text,
            created_at=parse_time(target.get("created_at")),
            lang=primary_lang(target.get("language")),
            url=get_str(target, "url") or uri,
            quote_of=get_str(quoted, "uri"),
            hashtags=_strings(target.get("tags"), "name"),
            mentions=_strings(target.get("mentions"), "acct"),
            links=list(dict.fromkeys(links)),
            like_count=_count(target.get("favourites_count")),
            repost_count=_count(target.get("reblogs_count")),
            reply_count=_count(target.get("replies_count")),
            native_id=f"mastodon:{self.host}:{local_id}",
            raw=compact_raw(status, drop=_RAW_DROP),
        )


def _strings(items: object, key: str) -> list[str]:
    """`item[key]` for each object in a list that has a string there."""
    if not isinstance(items, list):
        return []
    return [i[key] for i in items if isinstance(i, dict) and isinstance(i.get(key), str)]


def _peek_id(data: str) -> str | None:
    try:
        status = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        return None
    local_id = status.get("id") if isinstance(status, dict) else None
    return local_id if isinstance(local_id, str) and local_id.isdigit() else None


def _newer(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b, key=_id_order)
