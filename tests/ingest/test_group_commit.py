"""Group commit: the indexer writes batch after batch, then syncs the store once and only then
acknowledges them all. Real Redis, a real Qdrant Edge shard, the real model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ingest.bus import Bus
from ingest.changes import Upsert
from ingest.indexer import Indexer, IndexerConfig
from ingest.metrics import IngestMetrics
from retrieval.post import Post
from tests.conftest import BLUESKY_200


class SyncLog:
    """The real store, with a log of the order of writes and syncs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: list[str] = []
        self.fail_syncs = 0
        self.gate = threading.Event()  # a sync waits here until the test opens it
        self.gate.set()

    def upsert(self, posts: Sequence[Post], dense: Any) -> None:
        self.inner.upsert(posts, dense)
        self.events.append("upsert")

    def sync(self) -> None:
        self.gate.wait(timeout=30)
        if self.fail_syncs:
            self.fail_syncs -= 1
            raise OSError("disk full")
        self.inner.sync()
        self.events.append("sync")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def posts(n: int) -> list[Post]:
    return [Post.model_validate_json(line) for line in BLUESKY_200.read_text().splitlines()[:n]]


async def make(
    redis_url: str, store: Any, embedder: Any, interval_ms: int
) -> tuple[Bus, SyncLog, Indexer]:
    bus = Bus(aioredis.from_url(redis_url), "test:posts", "indexers")
    await bus.ensure_group()
    logged = SyncLog(store)
    config = IndexerConfig(consumer="w0", batch_size=10, sync_interval_ms=interval_ms)
    return bus, logged, Indexer(bus, logged, embedder, config, IngestMetrics())


async def test_batches_are_searchable_at_once_but_acknowledged_only_after_one_sync(
    redis_url, edge_store, minilm
) -> None:
    bus, logged, indexer = await make(redis_url, edge_store, minilm, interval_ms=60_000)
    await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts(30))])
    for _ in range(3):
        await indexer.process(await bus.read("w0", 10, 100))
    assert edge_store.count() == 30  # searchable before any acknowledgement
    assert logged.events == ["upsert"] * 3
    assert await bus.lag() == 30
    assert await indexer.commit()
    assert logged.events == ["upsert"] * 3 + ["sync"]
    assert await bus.lag() == 0


async def test_a_failed_sync_acknowledges_nothing_and_the_next_commit_does(
    redis_url, edge_store, minilm
) -> None:
    bus, logged, indexer = await make(redis_url, edge_store, minilm, interval_ms=60_000)
    logged.fail_syncs = 1
    await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts(5))])
    await indexer.process(await bus.read("w0", 10, 100))
    assert not await indexer.commit()
    assert await bus.lag() == 5
    assert indexer.metrics.store_errors._value.get() == 1
    assert await indexer.commit()
    assert await bus.lag() == 0


async def test_a_quiet_bus_commits_without_waiting_for_the_interval(
    redis_url, edge_store, minilm
) -> None:
    bus, logged, indexer = await make(redis_url, edge_store, minilm, interval_ms=60_000)
    stop = asyncio.Event()
    worker = asyncio.create_task(indexer.run(stop))
    try:
        await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts(25))])
        async with asyncio.timeout(20):
            while await bus.lag():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert logged.events[-1] == "sync"
        assert edge_store.count() == 25
    finally:
        stop.set()
        await worker


async def test_with_no_interval_every_batch_is_synced_then_acknowledged(
    redis_url, edge_store, minilm
) -> None:
    bus, logged, indexer = await make(redis_url, edge_store, minilm, interval_ms=0)
    await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts(20))])
    await indexer.process(await bus.read("w0", 10, 100))
    assert await bus.lag() == 10
    await indexer.process(await bus.read("w0", 10, 100))
    assert logged.events == ["upsert", "sync", "upsert", "sync"]
    assert await bus.lag() == 0


async def until_lag(bus: Bus, lag: int) -> None:
    async with asyncio.timeout(20):
        while await bus.lag() != lag:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_due_commit_syncs_beside_the_next_batch_and_acks_only_what_it_covered(
    redis_url, edge_store, minilm
) -> None:
    bus, logged, indexer = await make(redis_url, edge_store, minilm, interval_ms=50)
    await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts(30))])
    await indexer.process(await bus.read("w0", 10, 100))
    await asyncio.sleep(0.06)
    logged.gate.clear()  # the fsync is slow...
    await indexer.process(await bus.read("w0", 10, 100))  # ...due: a commit of 20 starts
    await indexer.process(await bus.read("w0", 10, 100))  # and the next batch goes on
    assert logged.events == ["upsert"] * 3  # written while the sync has not returned
    assert edge_store.count() == 30 and await bus.lag() == 30
    logged.gate.set()
    await until_lag(bus, 10)  # the commit acknowledged the 20 written before it began
    await asyncio.sleep(0.1)
    assert await bus.lag() == 10  # and not the 10 written during its sync
    assert await indexer.commit()
    assert logged.events == ["upsert"] * 3 + ["sync", "sync"]
    assert await bus.lag() == 0


async def test_a_failed_commit_beside_a_batch_hands_its_entries_to_the_next(
    redis_url, edge_store, minilm
) -> None:
    bus, logged, indexer = await make(redis_url, edge_store, minilm, interval_ms=50)
    indexer.config.retry_delay_s = 0.01
    logged.fail_syncs = 1
    await bus.publish("s", [([Upsert(p)], str(i)) for i, p in enumerate(posts(20))])
    await indexer.process(await bus.read("w0", 10, 100))
    await asyncio.sleep(0.06)
    await indexer.process(await bus.read("w0", 10, 100))  # due: the commit beside it fails
    assert not await indexer.commit()  # waits for it, and says so
    assert await bus.lag() == 20
    assert await indexer.commit()
    assert await bus.lag() == 0
