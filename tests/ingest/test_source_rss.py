"""The RSS/Atom source against a local feed server: conditional GETs, de-duplication
across polls and restarts, retries, and entry → Post."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from ingest.changes import Upsert
from ingest.sources import RawEvent
from ingest.sources.backoff import Backoff
from ingest.sources.rss import RssSource
from ingest.sources.spec import open_source
from retrieval.post import Post, PostRejected
from tests.fakes.draining import take
from tests.fakes.loopback import unused_port
from tests.fakes.rss import FakeFeed
from tests.ingest.conftest import FEED_ATOM, FEED_RSS

NEW_ITEM = b"""    <item>
      <title>Night bus route extended</title>
      <link>https://notes.example.org/2026/11/night-bus</link>
      <guid isPermaLink="false">notes-2026-11-23-bus</guid>
      <pubDate>Mon, 23 Nov 2026 06:00:00 +0000</pubDate>
      <description>The N7 now runs to the hospital.</description>
    </item>
  </channel>"""


def _source(url: str, **options: Any) -> RssSource:
    source = open_source(f"rss:{url}", **options)
    assert isinstance(source, RssSource)
    source._backoff = Backoff(initial=0.02, cap=0.05)
    return source


def _posts(source: RssSource, events: list[RawEvent]) -> list[Post]:
    return [c.post for e in events for c in source.normalise(e) if isinstance(c, Upsert)]


async def test_one_poll_yields_each_entry_oldest_first_as_a_post() -> None:
    async with FakeFeed(FEED_RSS.read_bytes()) as feed:
        source = _source(feed.url, finite=True)
        assert source.finite
        events = await take(source)
    posts = _posts(source, events)
    assert [p.id for p in posts] == [
        "notes-2026-11-20-ferry",
        "notes-2026-11-21-repair",
        "notes-2026-11-22-flood",
    ]
    ferry = posts[0]
    assert ferry.text == (
        "Ferry service resumes after storm\n\n"
        "The 08:30 crossing runs again & the timetable is online.\n\nExpect delays."
    )
    assert ferry.url == "https://notes.example.org/2026/11/ferry"
    assert "https://ferries.example.org/timetable" in ferry.links
    assert ferry.hashtags == ["transport", "weather"]
    assert ferry.author == "Harbour desk"
    assert ferry.lang == "en" and ferry.platform == "rss" and ferry.source == "rss:127.0.0.1"
    assert ferry.created_at.isoformat() == "2026-11-20T08:15:00+00:00"
    assert posts[2].text.endswith("Streets at risk are marked in red.\nSandbags at the depot.")


async def test_atom_entries_are_read_too() -> None:
    async with FakeFeed(FEED_ATOM.read_bytes(), content_type="application/atom+xml") as feed:
        source = _source(feed.url, finite=True)
        posts = _posts(source, await take(source))
    assert [p.url for p in posts] == [
        "https://atom.example.org/tram",
        "https://atom.example.org/markt",
    ]
    assert posts[0].text == "Straßenbahn fährt wieder\n\nLinie 4 fährt ab heute wieder nach Plan."
    assert posts[0].lang == "de" and posts[0].author == "Stadtredaktion"
    assert posts[1].created_at.isoformat() == "2026-11-22T09:30:00+00:00"


async def test_polling_uses_conditional_gets_and_yields_only_new_entries() -> None:
    body = FEED_RSS.read_bytes()
    async with FakeFeed(body) as feed:
        source = _source(feed.url, interval_s=0.05)
        stream = source.events(None)
        first = [await anext(stream) for _ in range(3)]
        waiting = asyncio.ensure_future(anext(stream))
        # Nothing new: the next polls are answered 304 and yield nothing.
        await asyncio.wait_for(feed.until(lambda f: f.not_modified >= 2), 5)
        assert not waiting.done()
        assert feed.request_headers[-1]["if-none-match"] == feed.etag
        feed.set_body(body.replace(b"  </channel>", NEW_ITEM))
        new = await asyncio.wait_for(waiting, 5)
        await stream.aclose()  # type: ignore[attr-defined]
    assert [p.id for p in _posts(source, [new])] == ["notes-2026-11-23-bus"]
    assert feed.full == 2
    assert json.loads(new.cursor or "")["seen"][-1] == "notes-2026-11-23-bus"
    assert len(first) == 3


async def test_restart_from_a_cursor_does_not_redeliver_entries() -> None:
    body = FEED_RSS.read_bytes()
    async with FakeFeed(body) as feed:
        first = _source(feed.url, finite=True)
        events = await take(first)
        saved = events[-1].cursor
        again = await take(_source(feed.url, finite=True), saved)
        assert again == []
        feed.set_body(body.replace(b"  </channel>", NEW_ITEM))
        later = await take(_source(feed.url, finite=True), saved)
    assert [json.loads(e.payload)["id"] for e in later] == ["notes-2026-11-23-bus"]


async def test_server_errors_are_retried_then_the_feed_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.sources.rss")
    async with FakeFeed(FEED_RSS.read_bytes()) as feed:
        feed.fail_next = 2
        events = await take(_source(feed.url, finite=True, max_attempts=5))
    assert len(events) == 3 and feed.failed == 2
    assert sum(r.message == "rss retrying" for r in caplog.records) == 2


async def test_one_poll_of_an_unreachable_feed_gives_up_with_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.sources.rss")
    source = _source(f"http://127.0.0.1:{unused_port()}/feed.xml", finite=True, max_attempts=2)
    assert await take(source) == []
    assert any(r.levelname == "ERROR" and "giving up" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"title": "no id or link", "published": "2026-11-20T08:15:00+00:00"}, "missing_field"),
        ({"id": "a", "title": "t"}, "missing_field"),
        ({"id": "a", "title": "t", "published": "1970-01-01T00:00:00+00:00"}, "implausible_date"),
        ({"id": "a", "title": "t", "published": "2099-01-01T00:00:00+00:00"}, "future_date"),
        ({"id": "a", "title": "t", "published": "last tuesday"}, "invalid_date"),
    ],
)
def test_bad_entries_are_rejected_with_a_reason(entry: dict[str, Any], reason: str) -> None:
    source = _source("https://example.org/feed.xml")
    with pytest.raises(PostRejected) as caught:
        source.normalise(RawEvent(payload=json.dumps(entry), kind="entry"))
    assert caught.value.reason == reason


def test_an_article_longer_than_a_post_is_kept_shortened() -> None:
    source = _source("https://example.org/feed.xml")
    entry = {
        "id": "long",
        "title": "t",
        "summary": "word " * 5000,
        "published": "2026-11-20T08:15:00Z",
    }
    [change] = source.normalise(RawEvent(payload=json.dumps(entry), kind="entry"))
    assert isinstance(change, Upsert)
    assert len(change.post.text) == 10_000 and change.post.text.endswith("…")
