"""Indexer workers: bus → embed → Qdrant Edge, with real Redis, the real model and a real shard."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from ingest.bus import Bus
from ingest.changes import Delete, Upsert
from ingest.indexer import Indexer, IndexerConfig
from ingest.metrics import IngestMetrics
from retrieval.post import Post
from tests.conftest import BLUESKY_200


def real_posts(n: int) -> list[Post]:
    lines = BLUESKY_200.read_text().splitlines()[:n]
    return [Post.model_validate_json(line) for line in lines]


async def make(redis_url: str, store: Any, embedder: Any) -> tuple[Bus, Indexer]:
    bus = Bus(aioredis.from_url(redis_url), "test:posts", "indexers")
    await bus.ensure_group()
    indexer = Indexer(
        bus, store, embedder, IndexerConfig(consumer="w0", batch_size=32), IngestMetrics()
    )
    return bus, indexer


async def drain(bus: Bus, indexer: Indexer) -> None:
    while entries := await bus.read(indexer.config.consumer, 32, 50):
        await indexer.process(entries)


async def test_replaying_the_same_posts_twice_indexes_each_once(
    redis_url, edge_store, minilm
) -> None:
    bus, indexer = await make(redis_url, edge_store, minilm)
    posts = real_posts(40)
    for _ in range(2):
        await bus.publish("jsonl", [([Upsert(p)], str(i)) for i, p in enumerate(posts)])
        await drain(bus, indexer)
    assert edge_store.count() == len({p.id for p in posts}) == 40
    assert await bus.lag() == 0


async def test_a_delete_removes_the_post_and_an_edit_replaces_it(
    redis_url, edge_store, minilm
) -> None:
    bus, indexer = await make(redis_url, edge_store, minilm)
    a, b = real_posts(2)
    edited = b.model_copy(update={"text": "an edited text about volcanoes"})
    await bus.publish("s", [([Upsert(a), Upsert(b)], "1")])
    await drain(bus, indexer)
    await bus.publish("s", [([Delete(post_id=a.id), Upsert(edited)], "2")])
    await drain(bus, indexer)
    stored = edge_store.get([a.id, b.id])
    assert [p.id for p in stored] == [b.id]
    assert stored[0].text == "an edited text about volcanoes"


async def test_a_create_then_delete_in_one_batch_leaves_nothing(
    redis_url, edge_store, minilm
) -> None:
    bus, indexer = await make(redis_url, edge_store, minilm)
    (a,) = real_posts(1)
    await bus.publish("s", [([Upsert(a)], "1"), ([Delete(post_id=a.id)], "2")])
    await drain(bus, indexer)
    assert edge_store.count() == 0


async def test_deletes_by_native_id_and_by_account(redis_url, edge_store, minilm) -> None:
    bus, indexer = await make(redis_url, edge_store, minilm)
    a, b, c = real_posts(3)
    a = a.model_copy(update={"native_id": "mastodon:example.social:42"})
    b = b.model_copy(update={"author_id": "did:plc:gone"})
    await bus.publish("s", [([Upsert(a), Upsert(b), Upsert(c)], "1")])
    await drain(bus, indexer)
    await bus.publish(
        "s",
        [([Delete(native_id="mastodon:example.social:42"), Delete(author_id="did:plc:gone")], "2")],
    )
    await drain(bus, indexer)
    assert [p.id for p in edge_store.get([a.id, b.id, c.id])] == [c.id]


async def test_reposts_and_copy_paste_spam_collapse_onto_one_post_with_a_count(
    redis_url, edge_store, minilm
) -> None:
    bus, indexer = await make(redis_url, edge_store, minilm)
    when = datetime(2024, 5, 1, tzinfo=UTC)
    text = "Breaking: the river has burst its banks near the old bridge, stay away"
    original = Post(id="tw:1", text=text, created_at=when, author="a")
    copies = [
        Post(
            id=f"tw:{i}",
            text=f"RT @a: {text.upper()}!! https://t.co/x{i}",
            created_at=when,
            author=f"u{i}",
        )
        for i in range(2, 6)
    ]
    await bus.publish("s", [([Upsert(original)], "1")])
    await drain(bus, indexer)
    await bus.publish("s", [([Upsert(c)], str(i)) for i, c in enumerate(copies)])
    await drain(bus, indexer)
    assert edge_store.count() == 1
    assert int(await bus.client.hget(indexer.dupe_count_key, "tw:1")) == 4
    # When the original is deleted, the next copy takes its place rather than vanishing.
    await bus.publish("s", [([Delete(post_id="tw:1")], "9")])
    await drain(bus, indexer)
    late = Post(id="tw:99", text=text, created_at=when, author="z")
    await bus.publish("s", [([Upsert(late)], "10")])
    await drain(bus, indexer)
    assert [p.id for p in edge_store.get(["tw:99"])] == ["tw:99"]


class FlakyStore:
    """The real store, failing its first `failures` upserts (a Qdrant outage)."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def upsert(self, posts: Sequence[Post], dense: Sequence[Sequence[float]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        self.inner.upsert(posts, dense)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_store_outage_is_retried_and_nothing_is_acked_before_the_write(
    redis_url, edge_store, minilm
) -> None:
    flaky = FlakyStore(edge_store, failures=3)
    bus, indexer = await make(redis_url, flaky, minilm)
    indexer.config.retry_delay_s = 0.01
    posts = real_posts(5)
    await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts)])
    entries = await bus.read("w0", 32, 100)
    await indexer.process(entries)
    assert flaky.failures == 0
    assert edge_store.count() == 5
    assert await bus.lag() == 0
    assert indexer.metrics.store_errors._value.get() == 3


async def test_stopping_during_an_outage_leaves_the_batch_pending(
    redis_url, edge_store, minilm
) -> None:
    flaky = FlakyStore(edge_store, failures=1_000)
    bus, indexer = await make(redis_url, flaky, minilm)
    await bus.publish("s", [([Upsert(p)], "1") for p in real_posts(3)])
    stop = asyncio.Event()
    stop.set()
    await indexer.process(await bus.read("w0", 32, 100), stop)
    assert await bus.lag() == 3
    assert len(await bus.read("w0", 32, 0, pending=True)) == 3
