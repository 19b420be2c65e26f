"""Every normaliser, fed malformed events, either returns changes or raises
`PostRejected` — never another exception — and every post it returns can be stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import feedparser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.changes import Change, Delete, Upsert
from ingest.sources import RawEvent
from ingest.sources.jetstream import JetstreamSource
from ingest.sources.jsonl import JsonlSource
from ingest.sources.mastodon import MastodonSource
from ingest.sources.rss import RssSource, _entry_json
from retrieval.post import PostRejected
from tests.ingest.conftest import (
    CRISIS_8,
    FEED_RSS,
    JETSTREAM_CAPTURE,
    JETSTREAM_GOLDEN,
    MASTODON_NORMALIZED,
    MASTODON_RAW,
    read_lines,
)

# No example database: a fuzz run must not leave files in the working tree.
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _lines(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


JETSTREAM_EVENTS = [
    e
    for e in _lines(JETSTREAM_CAPTURE) + _lines(JETSTREAM_GOLDEN)
    if e.get("commit", {}).get("collection") == "app.bsky.feed.post" or e["kind"] != "commit"
]
MASTODON_STATUSES = _lines(MASTODON_RAW)
JSONL_ROWS = _lines(CRISIS_8) + _lines(MASTODON_NORMALIZED)[:8]
_feed = feedparser.parse(FEED_RSS.read_bytes())
RSS_ENTRIES = [_entry_json(e, _feed.feed, "2026-11-23T00:00:00+00:00") for e in _feed.entries]

JETSTREAM = JetstreamSource("jetstream:wss://js.example/subscribe")
MASTODON = MastodonSource("mastodon:https://mastodon.social")
RSS = RssSource("rss:https://example.org/feed.xml")
JSONL = JsonlSource(f"jsonl:{CRISIS_8}")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "1970-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "\ud800", "did:x"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)


def _mutate(data: st.DataObject, value: Any, depth: int = 0) -> Any:
    """`value` with one spot somewhere inside it deleted, replaced or retyped."""
    if isinstance(value, dict) and value and depth < 6:
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["descend", "delete", "replace"]))
        copy = dict(value)
        if action == "delete":
            del copy[key]
        elif action == "replace":
            copy[key] = data.draw(json_values)
        else:
            copy[key] = _mutate(data, value[key], depth + 1)
        return copy
    if isinstance(value, list) and value and depth < 6:
        index = data.draw(st.integers(0, len(value) - 1))
        copy_list = list(value)
        copy_list[index] = _mutate(data, value[index], depth + 1)
        return copy_list
    return data.draw(json_values)


def _payload(data: st.DataObject, samples: list[dict[str, Any]]) -> bytes | str:
    shape = data.draw(st.sampled_from(["mutated", "mutated", "bytes", "text", "json", "flipped"]))
    if shape == "bytes":
        return data.draw(st.binary(max_size=200))
    if shape == "text":
        return data.draw(st.text(max_size=200))
    if shape == "json":
        return json.dumps(data.draw(json_values))
    sample = data.draw(st.sampled_from(samples))
    if shape == "flipped":
        raw = bytearray(json.dumps(sample, ensure_ascii=False).encode())
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        return bytes(raw)
    return json.dumps(_mutate(data, sample), ensure_ascii=False)


def _check(normalise: Callable[[RawEvent], list[Change]], event: RawEvent) -> None:
    try:
        changes = normalise(event)
    except PostRejected as exc:
        assert exc.reason
        return
    assert isinstance(changes, list)
    for change in changes:
        assert isinstance(change, Upsert | Delete)
        if isinstance(change, Upsert):
            line = change.post.to_jsonl()  # storable: valid UTF-8, JSON-serialisable
            assert line.encode("utf-8")
            assert len(change.post.text) <= 10_000


@FUZZ
@given(st.data())
def test_jetstream_normaliser_only_returns_changes_or_rejects(data: st.DataObject) -> None:
    _check(JETSTREAM.normalise, RawEvent(payload=_payload(data, JETSTREAM_EVENTS)))


@FUZZ
@given(st.data())
def test_mastodon_normaliser_only_returns_changes_or_rejects(data: st.DataObject) -> None:
    kind = data.draw(
        st.sampled_from(["update", "update", "status.update", "delete", "notification", None])
        | st.text(max_size=12)
    )
    if kind == "delete" and data.draw(st.booleans()):
        payload: bytes | str = data.draw(st.text(max_size=30) | st.binary(max_size=30))
    else:
        payload = _payload(data, MASTODON_STATUSES)
    _check(MASTODON.normalise, RawEvent(payload=payload, kind=kind))


@FUZZ
@given(st.data())
def test_rss_normaliser_only_returns_changes_or_rejects(data: st.DataObject) -> None:
    _check(RSS.normalise, RawEvent(payload=_payload(data, RSS_ENTRIES), kind="entry"))


@FUZZ
@given(st.data())
def test_jsonl_normaliser_only_returns_changes_or_rejects(data: st.DataObject) -> None:
    _check(JSONL.normalise, RawEvent(payload=_payload(data, JSONL_ROWS)))


def test_unmutated_samples_normalise_to_posts() -> None:
    # The fuzzers start from these; they must be good to begin with.
    assert all(JSONL.normalise(RawEvent(payload=json.dumps(r))) for r in JSONL_ROWS)
    assert all(RSS.normalise(RawEvent(payload=json.dumps(e))) for e in RSS_ENTRIES)
    assert all(
        MASTODON.normalise(RawEvent(payload=json.dumps(s), kind="update"))
        for s in MASTODON_STATUSES
    )
    posts = [JETSTREAM.normalise(RawEvent(payload=json.dumps(e))) for e in JETSTREAM_EVENTS]
    assert sum(1 for p in posts if p) >= 18
