"""The ingest daemon: pumps sources onto the bus, runs indexer workers, serves health,
metrics, stats and search over HTTP (the daemon owns the embedded store, so other
commands ask it rather than opening the shard themselves)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from ingest.bus import Bus, trend_prefix
from ingest.changes import Change
from ingest.indexer import Indexer, IndexerConfig
from ingest.metrics import IngestMetrics
from ingest.sources import RawEvent, Source
from retrieval.embedder import Embedder
from retrieval.post import PostRejected
from retrieval.store import PostStore
from retrieval.trending import TrendCounter

log = logging.getLogger(__name__)

# The shared feed list (`/feed add` in Discord writes it): spec → JSON, and a change stream.
FEEDS_KEY = "quipfeed:feeds"
FEED_CHANGES_KEY = "quipfeed:feeds:changes"

PUBLISH_BATCH = 256
SOURCE_QUEUE = 2048
RETENTION_EVERY_S = 600.0


@dataclass
class DaemonConfig:
    workers: int = 1
    batch_size: int = 64
    deadline_ms: int = 50
    # Group commit: sync the store and acknowledge at most this often (0: every batch).
    sync_interval_ms: int = 1000
    retention: timedelta | None = None
    consumer_prefix: str = "indexer"


@dataclass
class SourceState:
    spec: str
    finite: bool
    state: str = "starting"
    events: int = 0
    changes: int = 0
    dead: int = 0
    error: str | None = None


@dataclass
class Progress:
    events: int
    published: int
    indexed: int
    dead: int
    lag: int
    sources_done: int
    sources: int


@dataclass
class Daemon:
    """One process's share of ingest: some sources, some indexer workers, or both."""

    sources: Sequence[Source]
    bus: Bus
    store: PostStore
    embedder: Embedder
    config: DaemonConfig = field(default_factory=DaemonConfig)
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    states: dict[str, SourceState] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.pumps: dict[str, asyncio.Task[None]] = {}
        for source in self.sources:
            self.states[source.spec] = SourceState(source.spec, source.finite)
        self.indexers = [
            Indexer(
                self.bus,
                self.store,
                self.embedder,
                IndexerConfig(
                    consumer=f"{self.config.consumer_prefix}-{i}",
                    batch_size=self.config.batch_size,
                    deadline_ms=self.config.deadline_ms,
                    sync_interval_ms=self.config.sync_interval_ms,
                ),
                self.metrics,
                TrendCounter(self.bus.client, trend_prefix(self.bus.stream)),
            )
            for i in range(self.config.workers)
        ]

    async def run(
        self,
        stop: asyncio.Event,
        once: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
        follow_feeds: bool = False,
    ) -> None:
        """Run until `stop` is set or, with `once`, until every source has ended and every
        change it published is indexed. With `follow_feeds`, feeds added to or removed from
        the shared feed list (Redis `quipfeed:feeds`) start and stop while it runs."""
        if once and not all(s.finite for s in self.sources):
            endless = [s.spec for s in self.sources if not s.finite]
            raise ValueError(f"--once needs sources that end; these do not: {', '.join(endless)}")
        await self.bus.ensure_group()
        index_stop = asyncio.Event()
        for source in self.sources:
            self._start_pump(source, stop)
        pumps = list(self.pumps.values())
        workers = [asyncio.create_task(i.run(index_stop), name="indexer") for i in self.indexers]
        chores = [asyncio.create_task(self._chores(stop, on_progress), name="chores")]
        if follow_feeds and not once:
            chores.append(asyncio.create_task(self._follow_feed_list(stop), name="feeds"))
        try:
            if once:
                sources_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*pumps))
                await asyncio.wait(
                    [sources_done, asyncio.create_task(stop.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                # The lag lives in Redis (other processes' indexers may ack too): poll it.
                while not stop.is_set() and await self._lag_or_unknown() > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            else:
                await stop.wait()
        finally:
            stop.set()
            index_stop.set()
            for task in list(self.pumps.values()) + chores:
                task.cancel()
            # Indexers finish the batch in hand (it is then acknowledged), then stop.
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.gather(*self.pumps.values(), *chores, return_exceptions=True)
            if on_progress:
                on_progress(await self.progress())

    def _start_pump(self, source: Source, stop: asyncio.Event) -> None:
        self.states.setdefault(source.spec, SourceState(source.spec, source.finite))
        self.pumps[source.spec] = asyncio.create_task(
            self._pump(source, stop), name=f"pump {source.spec}"
        )

    async def _follow_feed_list(self, stop: asyncio.Event) -> None:
        """Keep the running sources in step with the shared feed list."""
        client = self.bus.client
        last_id = "0-0"
        if await client.exists(FEED_CHANGES_KEY):
            last_id = _s((await client.xinfo_stream(FEED_CHANGES_KEY))["last-generated-id"])
        for spec in await client.hkeys(FEEDS_KEY):
            self._add_feed(_s(spec), stop)
        while not stop.is_set():
            reply: Any = await client.xread({FEED_CHANGES_KEY: last_id}, block=1000, count=100)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = _s(entry_id)
                    change = {_s(k): _s(v) for k, v in fields.items()}
                    if change.get("op") == "add":
                        self._add_feed(change.get("spec", ""), stop)
                    elif change.get("op") == "remove":
                        self._remove_feed(change.get("spec", ""))

    def _add_feed(self, spec: str, stop: asyncio.Event) -> None:
        if spec in self.pumps and not self.pumps[spec].done():
            return
        from ingest.sources.spec import open_source

        try:
            source = open_source(spec)
        except Exception as exc:  # a bad spec in the shared list must not stop the daemon
            log.warning("feed list: cannot open source", extra={"spec": spec, "error": repr(exc)})
            return
        log.info("feed list: following", extra={"spec": spec})
        self._start_pump(source, stop)

    def _remove_feed(self, spec: str) -> None:
        task = self.pumps.pop(spec, None)
        if task is not None:
            task.cancel()
            self.states[spec].state = "removed"
            log.info("feed list: stopped following", extra={"spec": spec})

    async def _pump(self, source: Source, stop: asyncio.Event) -> None:
        state = self.states[source.spec]
        delay = 1.0
        while not stop.is_set():
            try:
                await self._pump_once(source, state)
                state.state = "done"
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source bug must not take the daemon down
                state.state, state.error = "error", repr(exc)
                self.metrics.source_reconnects.labels(source.spec).inc()
                log.exception("source failed; restarting", extra={"source": source.spec})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _pump_once(self, source: Source, state: SourceState) -> None:
        """Read events into a queue and publish them in batches: one Redis round trip for
        many events when the feed is fast, one per event when it is slow."""
        queue: asyncio.Queue[RawEvent | None] = asyncio.Queue(SOURCE_QUEUE)

        async def read() -> None:
            try:
                async for event in source.events(await self.bus.cursor(source.spec)):
                    await queue.put(event)
            finally:
                await queue.put(None)

        state.state = "running"
        reader = asyncio.create_task(read())
        try:
            ended = False
            while not ended:
                first = await queue.get()
                events: list[RawEvent] = []
                if first is None:
                    ended = True
                else:
                    events.append(first)
                while len(events) < PUBLISH_BATCH and not queue.empty() and not ended:
                    item = queue.get_nowait()
                    if item is None:
                        ended = True
                    else:
                        events.append(item)
                if events:
                    await self._publish(source, state, events)
            await reader  # re-raise what ended the source, if anything did
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _publish(self, source: Source, state: SourceState, events: list[RawEvent]) -> None:
        batch: list[tuple[Sequence[Change], str | None]] = []
        dead: list[tuple[str, str, bytes | str]] = []
        for event in events:
            try:
                changes: Sequence[Change] = source.normalise(event)
            except PostRejected as exc:
                dead.append((exc.reason, exc.detail, event.payload))
                changes = []
            except Exception as exc:  # a normaliser bug is bad input too: keep it, go on
                dead.append(("normaliser_error", repr(exc), event.payload))
                changes = []
            batch.append((changes, event.cursor))
        await self.bus.publish(source.spec, batch, dead)
        n_changes = sum(len(c) for c, _ in batch)
        state.events += len(events)
        state.changes += n_changes
        state.dead += len(dead)
        self.metrics.events_in.labels(source.spec).inc(len(events))
        self.metrics.changes_published.labels(source.spec).inc(n_changes)
        for reason, _, _ in dead:
            self.metrics.dead_letters.labels(reason).inc()
        for reason, detail, _ in dead:
            log.info(
                "dead letter",
                extra={"source": source.spec, "reason": reason, "detail": detail[:200]},
            )

    async def _chores(
        self, stop: asyncio.Event, on_progress: Callable[[Progress], None] | None
    ) -> None:
        last_retention = 0.0
        while not stop.is_set():
            with contextlib.suppress(Exception):
                self.metrics.bus_lag.set(await self.bus.lag())
                if on_progress:
                    on_progress(await self.progress())
            if self.config.retention and time.monotonic() - last_retention > RETENTION_EVERY_S:
                last_retention = time.monotonic()
                await self.apply_retention()
            await asyncio.sleep(0.5)

    async def apply_retention(self) -> None:
        if not self.config.retention:
            return
        cutoff = datetime.now(UTC) - self.config.retention
        try:
            await asyncio.to_thread(self.store.delete_where, created_before=cutoff)
            log.info("retention applied", extra={"created_before": cutoff.isoformat()})
        except Exception as exc:
            log.warning("retention failed", extra={"error": repr(exc)})

    async def _lag_or_unknown(self) -> int:
        """The bus lag, or 1 while Redis cannot be asked (the indexers are waiting for it too)."""
        try:
            return await self.bus.lag()
        except (RedisError, OSError):
            await asyncio.sleep(0.5)
            return 1

    async def progress(self) -> Progress:
        counters = await self.bus.counters()
        return Progress(
            events=sum(s.events for s in self.states.values()),
            published=counters.get("published", 0),
            indexed=int(self.metrics.posts_indexed._value.get()),
            dead=sum(v for k, v in counters.items() if k.startswith("dead:")),
            lag=max(0, counters.get("published", 0) - counters.get("acked", 0)),
            sources_done=sum(1 for s in self.states.values() if s.state == "done"),
            sources=len(self.states),
        )

    def health(self) -> dict[str, Any]:
        failing = [s.spec for s in self.states.values() if s.state == "error"]
        waiting = sum(1 for i in self.indexers if not i.healthy)
        return {
            "status": "degraded" if failing or waiting else "ok",
            "indexers_waiting_for_bus": waiting,
            "uptime_s": round(time.time() - self.started_at, 1),
            "indexers": len(self.indexers),
            "sources": {s.spec: s.__dict__ for s in self.states.values()},
        }


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
