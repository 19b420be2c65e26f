"""The JSON Lines replay: canonical lines → posts, deletes, bad lines, resume by line
number, gzip, and pacing by created_at with a virtual clock."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.changes import Delete, Upsert
from ingest.sources import RawEvent, SourceSpecError
from ingest.sources.jsonl import JsonlSource
from ingest.sources.spec import open_source
from retrieval.post import Post, PostRejected
from tests.fakes.draining import take
from tests.ingest.conftest import CRISIS_8, MASTODON_NORMALIZED, read_lines


def _source(path: Path, **options: Any) -> JsonlSource:
    source = open_source(f"jsonl:{path}", **options)
    assert isinstance(source, JsonlSource)
    return source


def _outcomes(source: JsonlSource, events: list[RawEvent]) -> list[Any]:
    """Per event: its changes, or the rejection reason."""
    out: list[Any] = []
    for event in events:
        try:
            out.append(source.normalise(event))
        except PostRejected as exc:
            out.append(exc.reason)
    return out


def _line(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=False)


async def test_replay_turns_each_line_into_a_post_with_its_labels_kept() -> None:
    source = _source(CRISIS_8)
    assert source.finite
    events = await take(source)
    assert [e.cursor for e in events] == [str(n) for n in range(1, 9)]
    posts = [c.post for e in events for c in source.normalise(e) if isinstance(c, Upsert)]
    assert len(posts) == 8
    first = json.loads(read_lines(CRISIS_8)[0])
    assert posts[0].id == first["id"] and posts[0].text == first["text"]
    assert posts[0].source == "crisislex_t26" and posts[0].topic == "2012_costa_rica_earthquake"
    assert posts[0].raw is not None and posts[0].raw["labels"] == first["labels"]


async def test_shared_data_keys_map_onto_post_fields() -> None:
    source = _source(MASTODON_NORMALIZED)
    events = await take(source, count=3)
    rows = [json.loads(line) for line in read_lines(MASTODON_NORMALIZED)[:3]]
    for event, row in zip(events, rows, strict=True):
        [change] = source.normalise(event)
        assert isinstance(change, Upsert)
        assert change.post.like_count == row["favourites_count"]
        assert change.post.reply_count == row["replies_count"]
        assert change.post.source == "mastodon_rtoot_fixtures"


async def test_resume_from_a_cursor_continues_after_that_line() -> None:
    source = _source(CRISIS_8)
    head = await take(source, count=3)
    tail = await take(_source(CRISIS_8), head[-1].cursor)
    assert [e.cursor for e in tail] == ["4", "5", "6", "7", "8"]
    assert [e.payload for e in head + tail] == [e.payload for e in await take(source)]


async def test_gzipped_files_replay_the_same(tmp_path: Path) -> None:
    packed = tmp_path / "crisis.jsonl.gz"
    packed.write_bytes(gzip.compress(CRISIS_8.read_bytes()))
    plain = [e.payload for e in await take(_source(CRISIS_8))]
    assert [e.payload for e in await take(_source(packed))] == plain


async def test_bad_lines_are_rejected_one_by_one_and_the_replay_goes_on(tmp_path: Path) -> None:
    good = _line(id="a", text="fine", created_at="2024-05-01T00:00:00.000Z")
    lines = [
        good.encode(),
        b"",
        b'{"id": "b", "text": "caf\xe9", "created_at": "2024-05-01T00:00:01Z"}',  # latin-1 byte
        b"{broken",
        _line(id="c", created_at="2024-05-01T00:00:02Z").encode(),
        _line(id="d", text="old", created_at="1970-01-01T00:00:00Z").encode(),
        _line(id="e", text="new", created_at="2099-01-01T00:00:00Z").encode(),
        _line(id="f", text="x" * 1_000_000, created_at="2024-05-01T00:00:03Z").encode(),
        _line(id="g", text="x" * 10_001, created_at="2024-05-01T00:00:03Z").encode(),
        _line(op="delete", id="a").encode(),
        _line(op="merge", id="a").encode(),
        b"   ",
        _line(id="h", text="last", created_at="2024-05-01T00:00:04Z", source="mine").encode(),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = _source(path)
    events = await take(source)
    assert [e.cursor for e in events] == ["1", "3", "4", "5", "6", "7", "8", "9", "10", "11", "13"]
    outcomes = _outcomes(source, events)
    assert isinstance(outcomes[0][0], Upsert) and outcomes[0][0].post.source == "jsonl"
    assert (
        outcomes[1:9]
        == [
            "invalid_utf8",
            "malformed_json",
            "missing_field",
            "implausible_date",
            "future_date",
            "payload_too_large",
            "text_too_long",
            [Delete(post_id="a")],
        ][:8]
    )
    assert outcomes[9] == "unknown_event_kind"
    assert isinstance(outcomes[10][0], Upsert) and outcomes[10][0].post.source == "mine"


async def test_speed_paces_the_replay_by_created_at_gaps() -> None:
    # The 8 lines span 19.998 s of real time: at speed 100 that is about 0.2 s.
    start = time.monotonic()
    await take(_source(CRISIS_8, speed=100))
    paced = time.monotonic() - start
    start = time.monotonic()
    await take(_source(CRISIS_8, speed=0))
    unpaced = time.monotonic() - start
    assert 0.18 <= paced < 2.0
    assert unpaced < 0.1


async def test_clock_shows_the_replayed_present() -> None:
    rows = [Post.model_validate_json(line) for line in read_lines(CRISIS_8)]
    fast = _source(CRISIS_8, speed=0)
    await take(fast)
    assert fast.clock.now() == rows[-1].created_at

    paced = _source(CRISIS_8, speed=50)
    seen = []
    async for event in paced.events(None):
        seen.append((json.loads(event.payload)["created_at"], paced.clock.now()))
    for created_at, now in seen:
        lag = (now - Post(id="x", text="", created_at=created_at).created_at).total_seconds()
        assert 0 <= lag < 5  # virtual seconds: the clock runs with the replay
    # After the file, the replayed present keeps moving at the replay's speed.
    assert paced.clock.now() > rows[-1].created_at


async def test_max_gap_skips_dead_time_between_posts(tmp_path: Path) -> None:
    path = tmp_path / "gappy.jsonl"
    path.write_text(
        "\n".join(
            [
                _line(id="1", text="a", created_at="2024-05-01T00:00:00Z"),
                _line(id="2", text="b", created_at="2024-05-01T06:00:00Z"),
            ]
        )
    )
    source = _source(path, speed=1, max_gap_s=0.05)
    start = time.monotonic()
    await take(source, within=2)
    assert time.monotonic() - start < 1.0
    assert source.clock.now().isoformat().startswith("2024-05-01T06:00")


def test_a_missing_file_or_a_negative_speed_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SourceSpecError, match="not found"):
        open_source(f"jsonl:{tmp_path / 'absent.jsonl'}")
    with pytest.raises(SourceSpecError, match="speed"):
        open_source(f"jsonl:{CRISIS_8}", speed=-1)
