"""The Redis Streams bus, against a real redis-server."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from ingest.bus import Bus
from ingest.changes import Delete, Upsert
from retrieval.post import Post


def post(n: int) -> Post:
    return Post(
        id=f"at://did:plc:x/app.bsky.feed.post/{n}",
        text=f"post {n}",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
    )


async def make_bus(url: str) -> Bus:
    bus = Bus(aioredis.from_url(url), "test:posts", "indexers")
    await bus.ensure_group()
    return bus


async def test_publish_saves_the_cursor_with_the_changes(redis_url: str) -> None:
    bus = await make_bus(redis_url)
    await bus.publish("jsonl:a", [([Upsert(post(1))], "1"), ([Upsert(post(2))], "2")])
    assert await bus.cursor("jsonl:a") == "2"
    assert await bus.cursor("jsonl:b") is None
    entries = await bus.read("w0", 10, 100)
    assert [e.change.post.id for e in entries if isinstance(e.change, Upsert)] == [
        post(1).id,
        post(2).id,
    ]
    assert await bus.lag() == 2


async def test_ack_clears_lag_and_counts_each_entry_once(redis_url: str) -> None:
    bus = await make_bus(redis_url)
    await bus.publish("s", [([Upsert(post(1)), Delete(post_id=post(2).id)], "1")])
    entries = await bus.read("w0", 10, 100)
    await bus.ack([e.entry_id for e in entries])
    await bus.ack([e.entry_id for e in entries])  # a second ack of the same entries
    assert await bus.lag() == 0
    assert (await bus.counters())["acked"] == 2


async def test_unacked_entries_are_redelivered_to_the_same_consumer(redis_url: str) -> None:
    bus = await make_bus(redis_url)
    await bus.publish("s", [([Upsert(post(1))], "1")])
    first = await bus.read("w0", 10, 100)
    assert await bus.read("w0", 10, 50) == []  # nothing new
    again = await bus.read("w0", 10, 0, pending=True)
    assert [e.entry_id for e in again] == [e.entry_id for e in first]


async def test_another_consumer_reclaims_what_a_dead_one_left(redis_url: str) -> None:
    bus = await make_bus(redis_url)
    await bus.publish("s", [([Upsert(post(1))], "1")])
    taken = await bus.read("dead-worker", 10, 100)
    reclaimed = await bus.reclaim("live-worker", min_idle_ms=0, count=10)
    assert [e.entry_id for e in reclaimed] == [e.entry_id for e in taken]
    assert reclaimed[0].change == Upsert(post(1))


async def test_dead_letters_keep_reason_and_a_bounded_payload(redis_url: str) -> None:
    bus = await make_bus(redis_url)
    await bus.publish("s", [([], "7")], dead=[("malformed_json", "line 7", b"{" + b"x" * 100_000)])
    letters = await bus.dead_letters()
    assert len(letters) == 1
    assert letters[0].reason == "malformed_json"
    assert letters[0].source == "s"
    assert len(letters[0].payload) <= 4_000
    assert await bus.cursor("s") == "7"  # the bad event is behind us, not retried forever
    assert (await bus.counters())["dead:malformed_json"] == 1


async def test_trim_keeps_pending_entries(redis_url: str) -> None:
    bus = await make_bus(redis_url)
    await bus.publish("s", [([Upsert(post(i))], str(i)) for i in range(5)])
    entries = await bus.read("w0", 10, 100)
    await bus.ack([e.entry_id for e in entries[:3]])
    await bus.trim()
    remaining = await bus.read("w0", 10, 0, pending=True)
    assert [e.entry_id for e in remaining] == [e.entry_id for e in entries[3:]]
