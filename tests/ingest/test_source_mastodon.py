"""The Mastodon source: Status → Post (HTML → text, boosts, deletes) and the SSE stream
against a faithful fake server (heartbeats, token, drops with backfill, hashtags)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from ingest.changes import Delete, Upsert
from ingest.sources import RawEvent
from ingest.sources.backoff import Backoff
from ingest.sources.mastodon import MastodonSource
from ingest.sources.spec import open_source
from retrieval.post import PostRejected
from tests.fakes.draining import take
from tests.fakes.mastodon import FakeMastodon, updates


def _source(spec: str = "mastodon:https://mastodon.social", **options: Any) -> MastodonSource:
    source = open_source(spec, **options)
    assert isinstance(source, MastodonSource)
    source._backoff = Backoff(initial=0.02, cap=0.1)
    return source


def _uri(status: dict[str, Any]) -> str:
    return str((status.get("reblog") or status)["uri"])


def _upserted(source: MastodonSource, events: list[RawEvent]) -> list[str]:
    return [c.post.id for e in events for c in source.normalise(e) if isinstance(c, Upsert)]


def test_status_html_becomes_the_same_plain_text_as_the_shared_normalised_data(
    mastodon_statuses: list[dict[str, Any]], mastodon_normalized: dict[str, dict[str, Any]]
) -> None:
    source = _source()
    for status in mastodon_statuses:
        [change] = source.normalise(RawEvent(payload=json.dumps(status), kind="update"))
        assert isinstance(change, Upsert)
        expected = mastodon_normalized[status["uri"]]
        assert change.post.text == expected["text"]
        assert "<p>" not in change.post.text and "&amp;" not in change.post.text
        if status["reblog"]:
            continue  # the shared data credits a boost to the booster; here it is the post
        assert change.post.author == expected["author"]
        assert change.post.lang == expected["lang"]
        assert change.post.like_count == expected["favourites_count"]
        assert change.post.hashtags == sorted({t.lower() for t in expected["hashtags"]})


def test_a_boost_is_the_boosted_post_with_its_own_delete_key(
    mastodon_statuses: list[dict[str, Any]],
) -> None:
    boost = next(s for s in mastodon_statuses if s["reblog"])
    [change] = _source().normalise(RawEvent(payload=json.dumps(boost), kind="update"))
    assert isinstance(change, Upsert)
    post = change.post
    assert post.id == boost["reblog"]["uri"] != boost["uri"]
    assert post.native_id == f"mastodon:mastodon.social:{boost['reblog']['id']}"
    assert post.author is not None and post.author_id == post.author and "@" in post.author
    assert post.source == "mastodon:mastodon.social" and post.platform == "mastodon"


def test_mentions_and_tags_are_not_links_but_other_anchors_are(
    mastodon_statuses: list[dict[str, Any]],
) -> None:
    source = _source()
    with_mentions = [s for s in mastodon_statuses if s["mentions"] and not s["reblog"]]
    assert with_mentions
    for status in with_mentions:
        [change] = source.normalise(RawEvent(payload=json.dumps(status), kind="update"))
        assert isinstance(change, Upsert)
        assert change.post.mentions == [m["acct"] for m in status["mentions"]]
        mention_urls = {m["url"] for m in status["mentions"]}
        assert not mention_urls & set(change.post.links)
    linked = [s for s in mastodon_statuses if s["card"] and not s["reblog"]]
    for status in linked:
        [change] = source.normalise(RawEvent(payload=json.dumps(status), kind="update"))
        assert isinstance(change, Upsert) and status["card"]["url"] in change.post.links


def test_delete_event_names_the_local_id_and_other_events_are_ignored() -> None:
    source = _source()
    assert source.normalise(RawEvent(payload="109281727661390549", kind="delete")) == [
        Delete(native_id="mastodon:mastodon.social:109281727661390549")
    ]
    assert source.normalise(RawEvent(payload="{}", kind="filters_changed")) == []


@pytest.mark.parametrize(
    ("payload", "kind", "reason"),
    [
        ("{}", "reaction.added", "unknown_event_kind"),
        ("{}", None, "unknown_event_kind"),
        ("not json", "update", "malformed_json"),
        (b'{"id": "1", "content": "\xff"}', "update", "invalid_utf8"),
        ('{"id": "1", "uri": "https://x/1"}', "update", "missing_field"),
        ("1 2; DROP", "delete", "invalid_field"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(
    payload: str | bytes, kind: str | None, reason: str
) -> None:
    with pytest.raises(PostRejected) as caught:
        _source().normalise(RawEvent(payload=payload, kind=kind))
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("created_at", "reason"),
    [("1970-01-01T00:00:00.000Z", "implausible_date"), ("2099-05-01T00:00:00.000Z", "future_date")],
)
def test_implausible_dates_are_rejected(
    mastodon_statuses: list[dict[str, Any]], created_at: str, reason: str
) -> None:
    status = {**mastodon_statuses[0], "created_at": created_at}
    with pytest.raises(PostRejected) as caught:
        _source().normalise(RawEvent(payload=json.dumps(status), kind="update"))
    assert caught.value.reason == reason


async def test_stream_delivers_updates_edits_and_deletes_but_not_heartbeats(
    mastodon_statuses: list[dict[str, Any]],
) -> None:
    first = mastodon_statuses[:5]
    edited = {**first[0], "content": "<p>edited</p>", "edited_at": "2022-11-04T00:00:00.000Z"}
    script = [
        *updates(first),
        ("status.update", json.dumps(edited)),
        ("delete", first[1]["id"]),
    ]
    async with FakeMastodon(script, token="s3cret") as server:
        source = _source(f"mastodon:{server.base_url}", token="s3cret")
        events = await take(source, count=7)
    assert [e.kind for e in events] == ["update"] * 5 + ["status.update", "delete"]
    changes = [c for e in events for c in source.normalise(e)]
    assert [c.post.id for c in changes if isinstance(c, Upsert)] == [
        *(_uri(s) for s in first),
        _uri(first[0]),
    ]
    edit = changes[5]
    assert isinstance(edit, Upsert) and edit.post.text == "edited"
    assert changes[6] == Delete(native_id=f"mastodon:127.0.0.1:{first[1]['id']}")
    # Ids are snowflakes: the cursor is the highest id seen, whatever came after it.
    assert events[-1].cursor == max((s["id"] for s in first), key=lambda i: (len(i), i))


async def test_a_refused_token_is_logged_and_retried_without_raising(
    mastodon_statuses: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.sources.mastodon")
    async with FakeMastodon(updates(mastodon_statuses[:3]), token="right") as server:
        source = _source(f"mastodon:{server.base_url}?token=wrong")
        with pytest.raises(TimeoutError):
            await take(source, count=1, within=0.5)
        assert server.position == 0
    assert any("refused the token" in r.message for r in caplog.records)
    assert sum(r.message == "mastodon reconnecting" for r in caplog.records) >= 2


async def test_a_dropped_stream_is_backfilled_from_the_last_id_so_nothing_is_lost(
    mastodon_statuses: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.sources.mastodon")
    expected = {_uri(s) for s in mastodon_statuses}
    async with FakeMastodon(updates(mastodon_statuses), drop_after=8, missed_on_drop=6) as server:
        source = _source(f"mastodon:{server.base_url}", page_limit=4)
        events = await take(source, until=lambda evs: expected <= set(_upserted(source, evs)))
        assert len(server.stream_requests) == 2
        # Backfill starts right after the last id the dropped stream delivered, and pages.
        assert server.timeline_requests[0]["min_id"] == mastodon_statuses[7]["id"]
        assert len(server.timeline_requests) >= 2
    ids = _upserted(source, events)
    assert set(ids) == expected
    assert len(ids) == len(mastodon_statuses)  # each status came exactly once
    assert any(r.message == "mastodon reconnecting" for r in caplog.records)


async def test_restart_with_a_cursor_backfills_what_was_posted_meanwhile(
    mastodon_statuses: list[dict[str, Any]],
) -> None:
    async with FakeMastodon([], timeline=mastodon_statuses) as server:
        source = _source(f"mastodon:{server.base_url}")
        saved = mastodon_statuses[9]["id"]
        events = await take(source, saved, count=len(mastodon_statuses) - 10)
    assert _upserted(source, events) == [_uri(s) for s in mastodon_statuses[10:]]
    assert events[-1].cursor == mastodon_statuses[-1]["id"]


async def test_hashtag_stream_carries_only_tagged_statuses(
    mastodon_statuses: list[dict[str, Any]],
) -> None:
    tagged = [s for s in mastodon_statuses if (s["reblog"] or s)["tags"]]
    tag = (tagged[0]["reblog"] or tagged[0])["tags"][0]["name"]
    with_tag = [
        s
        for s in mastodon_statuses
        if any(t["name"].lower() == tag.lower() for t in (s["reblog"] or s)["tags"])
    ]
    async with FakeMastodon(updates(mastodon_statuses)) as server:
        source = _source(f"mastodon:{server.base_url}?tag={tag}")
        events = await take(source, count=len(with_tag))
        assert server.stream_requests[0] == {"channel": "hashtag", "tag": tag}
    assert _upserted(source, events) == [_uri(s) for s in with_tag]
