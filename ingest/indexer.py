"""Indexer workers: read the bus in batches, embed, write to the store, then acknowledge.

An entry is acknowledged only after the store write that holds it has returned and the
store has been synced to disk since (`PostStore.sync`), so a crash at any point, even a
power loss, leaves it pending: the same consumer re-reads its own pending entries when it
starts again, and any other consumer reclaims entries left idle too long. Point ids derive
from post ids, so processing an entry twice writes the same point twice, never two points.

Syncing costs ~15–250 ms whatever the batch size (an fsync), so with `sync_interval_ms` the
indexer commits in groups: it writes batch after batch, and every `sync_interval_ms` (or as
soon as the bus has had nothing for it for a batch deadline) syncs once and acknowledges
everything written since. The periodic commit runs beside the next batch, so the fsync
overlaps embedding instead of stalling it: it covers exactly the entries written before it
began. Posts are searchable as soon as their batch is written; only the acknowledgement waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from ingest.bus import Bus, BusEntry
from ingest.changes import Delete, Upsert
from ingest.fingerprint import fingerprint
from ingest.metrics import IngestMetrics
from retrieval.embedder import Embedder
from retrieval.post import Post
from retrieval.schema import dense_text
from retrieval.store import PostStore
from retrieval.trending import TrendCounter

log = logging.getLogger(__name__)

RECLAIM_IDLE_MS = 60_000

_CLAIM_FINGERPRINTS = """
local owners = {}
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  owners[#owners + 1] = redis.call('HGET', KEYS[1], ARGV[i])
end
return owners
"""
# Short, because the delay in force when the store comes back is time the backlog waits: a
# failed write every few seconds costs nothing, a 30 s cap cost up to 30 s of catch-up.
MAX_BACKOFF_S = 5.0


@dataclass
class IndexerConfig:
    consumer: str
    batch_size: int = 64
    deadline_ms: int = 50
    reclaim_idle_ms: int = RECLAIM_IDLE_MS
    collapse_duplicates: bool = True
    retry_delay_s: float = 0.5
    # 0: sync the store and acknowledge after every batch. More: group commit (module doc).
    sync_interval_ms: int = 0


@dataclass
class _Plan:
    """What one batch asks of the store, in order: runs of upserts separated by deletes."""

    steps: list[list[Post] | Delete] = field(default_factory=list)

    def add(self, change: Upsert | Delete) -> None:
        if isinstance(change, Delete):
            self.steps.append(change)
        elif self.steps and isinstance(self.steps[-1], list):
            self.steps[-1].append(change.post)
        else:
            self.steps.append([change.post])


class Indexer:
    def __init__(
        self,
        bus: Bus,
        store: PostStore,
        embedder: Embedder,
        config: IndexerConfig,
        metrics: IngestMetrics,
        trends: TrendCounter | None = None,
    ) -> None:
        self.bus = bus
        self.trends = trends
        self.store = store
        self.embedder = embedder
        self.config = config
        self.metrics = metrics
        self.dupe_key = f"{bus.stream}:fingerprints"
        self.dupe_count_key = f"{bus.stream}:duplicates"
        self.batches = 0
        self.healthy = True
        # Written to the store, not yet synced and acknowledged (see `commit`).
        self._unacked: list[str] = []
        self._written_at = 0.0
        # The group commit under way beside the next batch, if any (see `_commit_beside`).
        self._committing: asyncio.Task[bool] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set; first finish what this consumer left pending last time.

        A lost connection to Redis (a restart, a failover) does not end the worker: it backs
        off, then starts again from its own pending entries, which the bus kept for it."""
        delay = self.config.retry_delay_s
        while not stop.is_set():
            try:
                await self._run_connected(stop)
                return
            except (RedisError, OSError) as exc:
                self.healthy = False
                self.metrics.bus_errors.inc()
                log.warning(
                    "bus unreachable; indexer will retry",
                    extra={
                        "consumer": self.config.consumer,
                        "error": repr(exc),
                        "retry_in_s": delay,
                    },
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        # Whatever was written but not acknowledged is still pending on the bus: re-read below.
        if self._committing is not None:
            with contextlib.suppress(Exception):  # a commit cut off by the lost connection
                await self._committing
            self._committing = None
        self._unacked = []
        await self.bus.ensure_group()
        self.healthy = True
        while not stop.is_set():
            pending = await self.bus.read(
                self.config.consumer, self.config.batch_size, 0, pending=True
            )
            if not pending:
                break
            await self.process(pending, stop)
            # Pending entries are re-read from the start: acknowledge before reading again.
            while not await self.commit():
                if stop.is_set():
                    return
                await asyncio.sleep(self.config.retry_delay_s)
        last_reclaim = 0.0
        while not stop.is_set():
            if time.monotonic() - last_reclaim > self.config.reclaim_idle_ms / 1000:
                last_reclaim = time.monotonic()
                orphans = await self.bus.reclaim(
                    self.config.consumer, self.config.reclaim_idle_ms, self.config.batch_size
                )
                if orphans:
                    log.info("reclaimed entries", extra={"count": len(orphans)})
                    await self.process(orphans, stop)
            batch = await _unless_stopped(self._next_batch(self._wait_ms()), stop)
            if batch:
                await self.process(batch, stop)
            else:
                await self.commit()  # the bus is quiet: no reason to hold acknowledgements
        await self.commit()

    def _wait_ms(self) -> int:
        """How long to wait for work: a second; with writes awaiting a commit, only a batch
        deadline, after which the bus counts as quiet and they are committed."""
        return max(1, self.config.deadline_ms) if self._unacked else 1000

    async def _next_batch(self, wait_ms: int = 1000) -> list[BusEntry]:
        """Wait up to `wait_ms` for work, then gather more until the batch is full or the
        deadline passes: small batches when the feed is slow, big ones when it is fast."""
        size = self.config.batch_size
        batch = await self.bus.read(self.config.consumer, size, wait_ms)
        if not batch:
            return batch
        deadline = time.monotonic() + self.config.deadline_ms / 1000
        while len(batch) < size:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = await self.bus.read(self.config.consumer, size - len(batch), remaining_ms)
            if not more:
                break
            batch.extend(more)
        return batch

    async def process(self, entries: Sequence[BusEntry], stop: asyncio.Event | None = None) -> None:
        """Apply a batch to the store and acknowledge it (with `sync_interval_ms`, at the next
        group commit); retries store failures with backoff until they succeed (or `stop` is
        set, leaving the entries pending for next time)."""
        plan = _Plan()
        for entry in entries:
            if entry.change is None:
                await self.bus.dead_letter("bus", "undecodable", entry.error or "", entry.entry_id)
                self.metrics.dead_letters.labels("undecodable").inc()
            else:
                plan.add(entry.change)
        delay = self.config.retry_delay_s
        while True:
            started = time.perf_counter()
            try:
                indexed = await self._apply(plan)
                break
            except Exception as exc:  # any store/embedder failure: retry, never lose the batch
                self.metrics.store_errors.inc()
                log.warning(
                    "store write failed; will retry",
                    extra={"error": repr(exc), "retry_in_s": delay, "entries": len(entries)},
                )
                if stop is not None and stop.is_set():
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        if not self._unacked:
            self._written_at = time.monotonic()
        self._unacked.extend(e.entry_id for e in entries)
        if time.monotonic() - self._written_at >= self.config.sync_interval_ms / 1000:
            if self.config.sync_interval_ms:
                self._commit_beside()
            else:
                await self.commit()
        now_ms = time.time() * 1000
        for entry in entries:
            if isinstance(entry.change, Upsert) and entry.arrived_ms:
                self.metrics.freshness_seconds.observe(max(0.0, (now_ms - entry.arrived_ms) / 1000))
        self.metrics.posts_indexed.inc(indexed)
        self.batches += 1
        if self.batches % 50 == 0:
            await self.bus.trim()

    async def commit(self) -> bool:
        """Sync the store, then acknowledge every entry written since the last commit. False
        (entries stay pending, to be committed next time) when the store cannot sync."""
        if self._committing is not None:
            # Its entries were taken out of `_unacked`: it must finish (or hand them back)
            # before this one, or a failure could leave them acknowledged by nobody.
            task, self._committing = self._committing, None
            if not await task:
                return False
        return await self._commit_now()

    def _commit_beside(self) -> None:
        """Start a group commit and go on with the next batch while it syncs. One at a time:
        while one runs, later writes wait for the next (a failed one's entries come back)."""
        if self._committing is not None:
            if not self._committing.done():
                return
            # A bus error surfaces here as it would have from an awaited commit.
            self._committing.result()
        self._committing = asyncio.create_task(self._commit_now(), name="group commit")

    async def _commit_now(self) -> bool:
        if not self._unacked:
            return True
        # Only what was written before the sync starts is covered by it; batches written
        # meanwhile (a commit beside the next batch) wait for the next commit.
        entries, self._unacked = self._unacked, []
        written_at = self._written_at
        try:
            await asyncio.to_thread(self.store.sync)
        except Exception as exc:  # a store failure: keep the entries, try again next time
            # They go back in front of any written since, and are the older: their time holds.
            self._unacked = entries + self._unacked
            self._written_at = written_at
            self.metrics.store_errors.inc()
            log.warning("store sync failed; will retry", extra={"error": repr(exc)})
            await asyncio.sleep(self.config.retry_delay_s)  # not a busy loop while it lasts
            return False
        await self.bus.ack(entries)
        return True

    async def _apply(self, plan: _Plan) -> int:
        indexed = 0
        for step in plan.steps:
            if isinstance(step, Delete):
                await asyncio.to_thread(self._delete, step)
                self.metrics.posts_deleted.inc()
                continue
            posts = _last_version(step)
            if self.config.collapse_duplicates:
                posts = await self._collapse_duplicates(posts)
            if not posts:
                continue
            vectors = await asyncio.to_thread(self.embedder.embed, [dense_text(p) for p in posts])
            # The matrix itself, not `.tolist()`: a 2-D array is a sequence of rows, and a store
            # converts it in one call (Edge) instead of float by float.
            rows = cast(Sequence[Sequence[float]], vectors)
            await asyncio.to_thread(self.store.upsert, posts, rows)
            if self.trends is not None:
                # Counted as posts are indexed, so `trending` costs nothing at query time. A
                # batch redelivered after a crash counts twice: trends are rates, not ledgers.
                await self.trends.record(posts)
            indexed += len(posts)
        return indexed

    def _delete(self, change: Delete) -> None:
        if change.post_id:
            self.store.delete([change.post_id])
        elif change.native_id:
            self.store.delete_where(native_id=change.native_id)
        elif change.author_id:
            self.store.delete_where(author_id=change.author_id)

    async def _collapse_duplicates(self, posts: list[Post]) -> list[Post]:
        """Keep posts whose text is new; count the rest against the post that said it first,
        unless that post is gone from the store, in which case the newcomer takes its place."""
        prints = [fingerprint(p.text) for p in posts]
        keyed = [(p, fp) for p, fp in zip(posts, prints, strict=True) if fp]
        if not keyed:
            return posts
        client: Any = self.bus.client
        # One round trip for the whole batch: claim each fingerprint for its post unless
        # another post already holds it, and say who holds each.
        held = await client.eval(
            _CLAIM_FINGERPRINTS,
            1,
            self.dupe_key,
            *[x for post, fp in keyed for x in (fp, post.id)],
        )
        owners: dict[str, str] = {fp: _s(owner) for (_, fp), owner in zip(keyed, held, strict=True)}
        candidates = {owners[fp] for post, fp in keyed if owners[fp] != post.id}
        alive = {p.id for p, fp in keyed if owners[fp] == p.id}
        if candidates:
            alive |= {p.id for p in await asyncio.to_thread(self.store.get, sorted(candidates))}
        kept: list[Post] = []
        pipe = client.pipeline(transaction=False)
        for post, maybe_fp in zip(posts, prints, strict=True):
            owner = owners.get(maybe_fp) if maybe_fp else None
            if maybe_fp is None or owner is None or owner == post.id:
                kept.append(post)
            elif owner in alive:
                pipe.hincrby(self.dupe_count_key, owner, 1)
                self.metrics.duplicates.inc()
            else:
                owners[maybe_fp] = post.id
                alive.add(post.id)
                pipe.hset(self.dupe_key, maybe_fp, post.id)
                kept.append(post)
        await pipe.execute()
        return kept


async def _unless_stopped(
    work: Coroutine[Any, Any, list[BusEntry]], stop: asyncio.Event
) -> list[BusEntry]:
    """`work`'s entries, or none if `stop` is set first: a stop does not wait out a blocking
    read. Entries a cancelled read was already given stay pending for the next start."""
    read = asyncio.ensure_future(work)
    halt = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({read, halt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.cancel()
    if read.done():
        return read.result()
    read.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await read
    return []


def _last_version(posts: list[Post]) -> list[Post]:
    """One post per id, the latest in the batch (an edit after a create wins)."""
    latest: dict[str, Post] = {}
    for post in posts:
        latest.pop(post.id, None)
        latest[post.id] = post
    return list(latest.values())


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
