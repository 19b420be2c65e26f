"""The daemon in-process: sources that misbehave, retention, the --once contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from ingest.bus import Bus
from ingest.changes import Change, Upsert
from ingest.daemon import Daemon, DaemonConfig
from ingest.sources import RawEvent
from retrieval.post import Post, PostRejected


@dataclass
class ListSource:
    """A finite source over in-memory payloads; `crash_after` makes events() raise once."""

    payloads: list[str]
    spec: str = "list:test"
    finite: bool = True
    crash_after: int | None = None
    crashed: bool = field(default=False)

    async def events(self, cursor: str | None) -> AsyncIterator[RawEvent]:
        start = int(cursor) if cursor else 0
        for i in range(start, len(self.payloads)):
            if self.crash_after is not None and i == self.crash_after and not self.crashed:
                self.crashed = True
                raise RuntimeError("the source's connection library blew up")
            yield RawEvent(self.payloads[i], cursor=str(i + 1))

    def normalise(self, event: RawEvent) -> list[Change]:
        text = event.payload if isinstance(event.payload, str) else event.payload.decode()
        if text == "bug":
            raise KeyError("a normaliser bug")
        if text == "bad":
            raise PostRejected("malformed", "not a post")
        return [Upsert(Post.model_validate_json(text))]


def post_json(n: int, age: timedelta = timedelta(0)) -> str:
    created = datetime.now(UTC) - age
    return Post(
        id=f"p{n}", text=f"post number {n} about trains", created_at=created
    ).model_dump_json()


async def run_once(redis_url: str, store, embedder, sources, **config) -> Daemon:  # type: ignore[no-untyped-def]
    bus = Bus(aioredis.from_url(redis_url), "t:posts", "indexers")
    daemon = Daemon(sources, bus, store, embedder, DaemonConfig(**config))
    await asyncio.wait_for(daemon.run(asyncio.Event(), once=True), timeout=120)
    return daemon


async def test_a_normaliser_bug_is_dead_lettered_and_the_rest_indexed(
    redis_url, edge_store, minilm
) -> None:
    source = ListSource([post_json(1), "bug", "bad", post_json(2)])
    daemon = await run_once(redis_url, edge_store, minilm, [source])
    assert edge_store.count() == 2
    reasons = sorted(d.reason for d in await daemon.bus.dead_letters())
    assert reasons == ["malformed", "normaliser_error"]


async def test_a_source_that_crashes_is_restarted_from_its_cursor(
    redis_url, edge_store, minilm
) -> None:
    source = ListSource([post_json(i) for i in range(6)], crash_after=3)
    daemon = await run_once(redis_url, edge_store, minilm, [source])
    assert source.crashed
    assert edge_store.count() == 6
    assert (await daemon.bus.counters())["published"] == 6  # none published twice
    assert daemon.metrics.source_reconnects.labels("list:test")._value.get() == 1


async def test_retention_drops_posts_older_than_the_window(redis_url, edge_store, minilm) -> None:
    source = ListSource([post_json(1, timedelta(days=10)), post_json(2, timedelta(hours=1))])
    daemon = await run_once(redis_url, edge_store, minilm, [source], retention=timedelta(days=7))
    await daemon.apply_retention()
    assert [p.id for p in edge_store.get(["p1", "p2"])] == ["p2"]


async def test_once_refuses_sources_that_never_end(redis_url, edge_store, minilm) -> None:
    endless = ListSource([], spec="jetstream:wss://example", finite=False)
    with pytest.raises(ValueError, match="jetstream"):
        await run_once(redis_url, edge_store, minilm, [endless])


async def test_two_workers_share_the_work_without_duplicates(redis_url, edge_store, minilm) -> None:
    source = ListSource([post_json(i) for i in range(120)])
    daemon = await run_once(redis_url, edge_store, minilm, [source], workers=2, batch_size=16)
    assert edge_store.count() == 120
    assert await daemon.bus.lag() == 0


async def test_feeds_added_to_the_shared_list_start_while_the_daemon_runs(
    redis_url, edge_store, minilm, tmp_path
) -> None:
    from ingest.daemon import FEED_CHANGES_KEY, FEEDS_KEY

    feed = tmp_path / "late.jsonl"
    feed.write_text("\n".join(post_json(i) for i in range(5)) + "\n")
    bus = Bus(aioredis.from_url(redis_url), "t:posts", "indexers")
    daemon = Daemon([], bus, edge_store, minilm, DaemonConfig())
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, follow_feeds=True))
    await asyncio.sleep(0.5)
    spec = f"jsonl:{feed}"
    await bus.client.hset(FEEDS_KEY, spec, "{}")
    await bus.client.xadd(FEED_CHANGES_KEY, {"op": "add", "spec": spec})
    for _ in range(200):
        if edge_store.count() == 5:
            break
        await asyncio.sleep(0.1)
    assert edge_store.count() == 5
    await bus.client.xadd(FEED_CHANGES_KEY, {"op": "remove", "spec": spec})
    for _ in range(50):
        if spec not in daemon.pumps:
            break
        await asyncio.sleep(0.1)
    assert spec not in daemon.pumps
    stop.set()
    await asyncio.wait_for(running, timeout=30)
