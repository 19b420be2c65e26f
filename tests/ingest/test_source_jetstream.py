"""The Jetstream source: parsing the verbatim capture, filters, and the live websocket
against a faithful fake server (cursor replay, drops, refused connections, zstd)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import websockets

from ingest.changes import Change, Delete, Upsert
from ingest.sources import RawEvent
from ingest.sources.backoff import Backoff
from ingest.sources.jetstream import JetstreamSource
from ingest.sources.spec import open_source
from retrieval.post import PostRejected
from tests.fakes.draining import take
from tests.fakes.jetstream import FakeJetstream
from tests.fakes.loopback import unused_port

DELETED = "at://did:plc:4smmjsqf6l5jkzczvw6vsrqc/app.bsky.feed.post/3mpt73z3ejc2p"
FAST = {"rewind_s": 0.05}


def _source(url: str = "ws://127.0.0.1:1/subscribe", **options: Any) -> JetstreamSource:
    source = open_source(f"jetstream:{url}", **options)
    assert isinstance(source, JetstreamSource)
    source._backoff = Backoff(initial=0.02, cap=0.1)
    return source


def _changes(source: JetstreamSource, lines: list[str]) -> list[Change]:
    return [c for line in lines for c in source.normalise(RawEvent(payload=line))]


def _post_ids(lines: list[str]) -> set[str]:
    ids = set()
    for line in lines:
        event = json.loads(line)
        commit = event.get("commit", {})
        if commit.get("collection") == "app.bsky.feed.post":
            ids.add(f"at://{event['did']}/app.bsky.feed.post/{commit['rkey']}")
    return ids


def _event_ids(source: JetstreamSource, events: list[RawEvent]) -> list[str]:
    ids = []
    for event in events:
        for change in source.normalise(event):
            ids.append(change.post.id if isinstance(change, Upsert) else str(change.post_id))
    return ids


def test_capture_yields_17_posts_and_1_delete_and_nothing_for_other_events(
    capture_lines: list[str],
) -> None:
    source = _source()
    per_line = [source.normalise(RawEvent(payload=line)) for line in capture_lines]
    upserts = [c for cs in per_line for c in cs if isinstance(c, Upsert)]
    deletes = [c for cs in per_line for c in cs if isinstance(c, Delete)]
    assert len(capture_lines) == 152
    assert len(upserts) == 17
    assert deletes == [Delete(post_id=DELETED)]
    # likes, reposts, follows, blocks, statuses, identity, account(active): nothing
    assert sum(1 for cs in per_line if cs) == 18
    assert len({u.post.id for u in upserts}) == 17


def test_capture_posts_carry_links_tags_replies_and_a_citable_url(
    capture_lines: list[str],
) -> None:
    posts = {c.post.id: c.post for c in _changes(_source(), capture_lines) if isinstance(c, Upsert)}
    youtube = posts["at://did:plc:dclwtltrt2ggsryagfzk7dp4/app.bsky.feed.post/3mptbyoeyc22k"]
    # The text holds a truncated link; the facet holds the whole one.
    assert youtube.text == "www.youtube.com/watch?v=V5lD..."
    assert youtube.links == ["https://www.youtube.com/watch?v=V5lDo-jw8mA"]
    assert youtube.url == (
        "https://bsky.app/profile/did:plc:dclwtltrt2ggsryagfzk7dp4/post/3mptbyoeyc22k"
    )
    assert youtube.platform == "bluesky" and youtube.source == "jetstream"
    assert youtube.author_id == "did:plc:dclwtltrt2ggsryagfzk7dp4"
    assert youtube.lang == "en"
    assert youtube.created_at.isoformat() == "2026-07-04T14:38:06.240000+00:00"

    tagged = posts["at://did:plc:tn3hni2jpphsgl6amfbb7ja6/app.bsky.feed.post/3mptbypfywk2v"]
    assert tagged.hashtags == ["howtotellaitoshutup", "indierebellion"]

    reply = posts["at://did:plc:o2rolxey6s5k7d4lxcz3inl4/app.bsky.feed.post/3mptbyp7lu223"]
    parent = "at://did:plc:i5y2f3gtpjxs3qg6fwgb6jb4/app.bsky.feed.post/3mpt7u2vlgs2c"
    assert reply.reply_to == parent and reply.thread_root == parent and reply.lang == "ko"

    no_langs = posts["at://did:plc:fe7cz462lvsuhadx6z35orni/app.bsky.feed.post/3mptbypt22l26"]
    assert no_langs.lang is None and no_langs.links == ["https://denikn.cz/2113523"]
    assert any(p.text == "" for p in posts.values())  # an image-only post is still a post
    for post in posts.values():
        assert post.raw is not None and len(json.dumps(post.raw)) <= 4096
        assert "thumb" not in json.dumps(post.raw)


def test_golden_events_each_normalise_to_the_expected_shape(golden_lines: list[str]) -> None:
    source = _source()
    results = [source.normalise(RawEvent(payload=line)) for line in golden_lines]
    kinds = [json.loads(line)["kind"] for line in golden_lines]
    assert len(results) == 10
    [reply] = [c for cs in results for c in cs]
    assert isinstance(reply, Upsert) and reply.post.reply_to is not None
    assert kinds.count("account") == 1 and kinds.count("identity") == 1


def test_deactivated_account_deletes_all_its_posts_and_identity_names_the_author(
    capture_lines: list[str],
) -> None:
    source = _source()
    did = "did:plc:dclwtltrt2ggsryagfzk7dp4"
    identity = {
        "did": did,
        "time_us": 1783175888000000,
        "kind": "identity",
        "identity": {
            "did": did,
            "handle": "news.example.com",
            "seq": 1,
            "time": "2026-07-04T14:38:07.877Z",
        },
    }
    assert source.normalise(RawEvent(payload=json.dumps(identity))) == []
    [post_line] = [line for line in capture_lines if did in line and "feed.post" in line]
    [upsert] = source.normalise(RawEvent(payload=post_line))
    assert isinstance(upsert, Upsert)
    assert upsert.post.author == "news.example.com"
    assert upsert.post.url == "https://bsky.app/profile/news.example.com/post/3mptbyoeyc22k"
    account = {
        "did": did,
        "time_us": 1783175888000001,
        "kind": "account",
        "account": {
            "active": False,
            "did": did,
            "seq": 2,
            "status": "deleted",
            "time": "2026-07-04T14:38:08Z",
        },
    }
    assert source.normalise(RawEvent(payload=json.dumps(account))) == [Delete(author_id=did)]


def _post_event(text: str, **record: Any) -> str:
    return json.dumps(
        {
            "did": "did:plc:abc",
            "time_us": 1783175888090631,
            "kind": "commit",
            "commit": {
                "rev": "3mptbypcq372f",
                "operation": "create",
                "collection": "app.bsky.feed.post",
                "rkey": "3mptbyoeyc22k",
                "record": {
                    "$type": "app.bsky.feed.post",
                    "createdAt": "2026-07-04T14:38:06.240Z",
                    "text": text,
                    **record,
                },
                "cid": "bafyrei",
            },
        },
        ensure_ascii=False,
    )


def test_mention_facets_are_read_at_utf8_byte_offsets() -> None:
    text = "Grüße an @alice.bsky.social 👋 und #Bühne"
    raw = text.encode()
    start = raw.index(b"@alice")
    end = start + len(b"@alice.bsky.social")
    facets = [
        {
            "index": {"byteStart": start, "byteEnd": end},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:alice"}],
        },
        {
            "index": {"byteStart": raw.index(b"#"), "byteEnd": len(raw)},
            "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "Bühne"}],
        },
    ]
    [upsert] = _source().normalise(RawEvent(payload=_post_event(text, facets=facets)))
    assert isinstance(upsert, Upsert)
    assert upsert.post.mentions == ["alice.bsky.social"]
    assert upsert.post.hashtags == ["bühne"]


def test_quote_posts_name_the_quoted_post() -> None:
    quoted = "at://did:plc:other/app.bsky.feed.post/3abc"
    embed = {"$type": "app.bsky.embed.record", "record": {"uri": quoted, "cid": "bafy"}}
    [upsert] = _source().normalise(RawEvent(payload=_post_event("look", embed=embed)))
    assert isinstance(upsert, Upsert) and upsert.post.quote_of == quoted


def test_language_and_keyword_filters_drop_other_posts(capture_lines: list[str]) -> None:
    english = _source("ws://127.0.0.1:1/subscribe?lang=en")
    kept = [c for c in _changes(english, capture_lines) if isinstance(c, Upsert)]
    assert kept
    for upsert in kept:
        assert upsert.post.raw is not None
        langs = upsert.post.raw["commit"]["record"]["langs"]
        assert "en" in [tag.split("-")[0].lower() for tag in langs]
    assert len(kept) < 17
    # Deletes are not filtered: they are cheap and the post may have been kept earlier.
    assert Delete(post_id=DELETED) in _changes(english, capture_lines)

    keyword = _source("ws://127.0.0.1:1/subscribe?keyword=GOVERNMENT")
    kept = [c for c in _changes(keyword, capture_lines) if isinstance(c, Upsert)]
    assert kept and all("government" in c.post.text.lower() for c in kept)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"did": "did:plc:x", "kind": "commit", "commit": \xff}', "invalid_utf8"),
        ("{not json", "malformed_json"),
        ('["a list"]', "malformed_json"),
        ('{"did": "did:plc:x", "time_us": 1, "kind": "labels"}', "unknown_event_kind"),
        (
            _post_event("old").replace("2026-07-04T14:38:06.240Z", "1970-01-01T00:00:00Z"),
            "implausible_date",
        ),
        (
            _post_event("new").replace("2026-07-04T14:38:06.240Z", "2099-01-01T00:00:00Z"),
            "future_date",
        ),
        (_post_event("x" * 1_000_001), "payload_too_large"),
        (_post_event("x" * 20_000), "text_too_long"),
        (_post_event("bad").replace('"create"', '"resurrect"'), "unknown_event_kind"),
        (
            _post_event("bad").replace('"createdAt": "2026-07-04T14:38:06.240Z", ', ""),
            "missing_field",
        ),
        (_post_event("bad").replace('"did:plc:abc"', '"not-a-did"'), "invalid_field"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(payload: str | bytes, reason: str) -> None:
    with pytest.raises(PostRejected) as caught:
        _source().normalise(RawEvent(payload=payload))
    assert caught.value.reason == reason


async def test_subscription_asks_for_posts_and_dids_and_gets_every_post(
    capture_lines: list[str],
) -> None:
    async with FakeJetstream(capture_lines) as server:
        source = _source(
            f"{server.url}?did=did:plc:dclwtltrt2ggsryagfzk7dp4&did=did:plc:amnbije7mr5g3pgxuun7q44o"
        )
        events = await take(source, count=2)
        assert server.requests[0]["wantedCollections"] == ["app.bsky.feed.post"]
        assert set(server.requests[0]["wantedDids"]) == {
            "did:plc:dclwtltrt2ggsryagfzk7dp4",
            "did:plc:amnbije7mr5g3pgxuun7q44o",
        }
        assert "cursor" not in server.requests[0]
        assert len(_event_ids(source, events)) == 2

    expected = _post_ids(capture_lines)
    async with FakeJetstream(capture_lines) as server:
        source = _source(server.url)
        # The server filtered to posts; identity/account still come through, as upstream.
        events = await take(source, count=18 + 2)
        assert set(_event_ids(source, events)) == expected
        assert [json.loads(e.payload)["kind"] for e in events[-2:]] == ["identity", "account"]
        assert events[-1].cursor == str(max(json.loads(e.payload)["time_us"] for e in events))


async def test_dropped_connection_resumes_from_max_time_us_minus_rewind_without_loss(
    capture_lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    expected = _post_ids(capture_lines)
    caplog.set_level(logging.INFO, logger="ingest.sources.jetstream")
    async with FakeJetstream(capture_lines, drop_after=9) as server:
        source = _source(server.url, **FAST)
        events = await take(source, until=lambda evs: expected <= set(_event_ids(source, evs)))
        assert len(server.requests) == 2
        before_drop = events[:9]
        best = max(json.loads(e.payload)["time_us"] for e in before_drop)
        assert before_drop[-1].cursor == str(best)
        assert server.requests[1]["cursor"] == [str(best - 50_000)]
    ids = _event_ids(source, events)
    assert set(ids) == expected
    # Redelivered events are only those inside the rewind window.
    for event in events[9:]:
        if _event_ids(source, [event])[0] in _event_ids(source, before_drop):
            assert json.loads(event.payload)["time_us"] >= best - 50_000
    assert any(r.message == "jetstream reconnecting" for r in caplog.records)


async def test_restart_from_a_saved_cursor_replays_only_the_rewind_window(
    capture_lines: list[str],
) -> None:
    expected = _post_ids(capture_lines)
    async with FakeJetstream(capture_lines) as server:
        first = _source(server.url, **FAST)
        head = await take(first, count=6)
        saved = head[-1].cursor
        assert saved is not None
        second = _source(server.url, **FAST)
        tail = await take(
            second,
            saved,
            until=lambda evs: expected <= set(_event_ids(first, head) + _event_ids(second, evs)),
        )
        assert server.requests[-1]["cursor"] == [str(int(saved) - 50_000)]
        assert all(json.loads(e.payload)["time_us"] >= int(saved) - 50_000 for e in tail)


async def test_refused_connections_are_retried_until_the_server_appears(
    capture_lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.sources.jetstream")
    port = unused_port()
    source = _source(f"ws://127.0.0.1:{port}/subscribe")
    reader = asyncio.create_task(take(source, count=3, within=10))
    await asyncio.sleep(0.3)
    assert not reader.done()
    async with FakeJetstream(capture_lines, port=port):
        events = await reader
    assert len(events) == 3
    retries = [r for r in caplog.records if r.message == "jetstream reconnecting"]
    assert len(retries) >= 2
    assert "error" in retries[0].__dict__ and "attempt" in retries[0].__dict__


async def test_fake_server_refuses_a_non_integer_cursor(capture_lines: list[str]) -> None:
    async with FakeJetstream(capture_lines) as server:
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            async with websockets.connect(f"{server.url}?cursor=yesterday"):
                pass
        assert caught.value.response.status_code == 400


async def test_compressed_stream_decodes_to_the_verbatim_events(capture_lines: list[str]) -> None:
    async with FakeJetstream(capture_lines) as server:
        source = _source(f"{server.url}?compress=true")
        events = await take(source, count=5)
        assert server.requests[0]["compress"] == ["true"]
    posts = [
        line
        for line in capture_lines
        if '"app.bsky.feed.post"' in line or '"kind":"identity"' in line
    ]
    assert [e.payload for e in events] == [line.encode() for line in posts[:5]]
