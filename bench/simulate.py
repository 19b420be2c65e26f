"""Load simulation: rising offered ingest load with concurrent searches, until something breaks.

Drives the real pipeline on this machine — `RateSource` → embedded Redis Streams bus → the
daemon's indexer (embed → Qdrant Edge write) — one step per offered rate (25, 50, 100, 200 …
posts/s, `--step-seconds` each), while `Searcher.search` runs at a fixed rate against the same
growing shard. The shard, bus and Redis persist across steps, so later steps search and write
a bigger store. It stops at the first step whose freshness p99 exceeds `--max-freshness-ms`
(default 1000), whose query p99 exceeds `--max-query-ms` (default 200), or whose backlog does
not drain, and says which stage's time grew.

Per post (every post, not a sample), from thin timing wrappers around the real embedder and
store (the indexer code itself is unchanged):
- `bus`: the source yields the post → its batch starts embedding (publish, XREADGROUP, the
  batching deadline, duplicate check, and waiting behind earlier batches),
- `embed`: its batch's embed call,
- `write`: its batch's `store.upsert` (durable when it returns, and then searchable),
- freshness = the sum: source → written. The daemon's own `quipfeed_batch_seconds` and
  `quipfeed_freshness_seconds` histograms (IngestMetrics) are reported beside it.
Per query: total, query embedding, and `store.query` time. CPU: this process (`os.times`) and
the Redis server (`/proc`), in cores used over the step.

Run: `python -m bench.simulate [--embedder static] [--max-rate N] [--step-seconds S] [--json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.ingest import RateSource, percentile, real_posts
from ingest.bus import Bus
from ingest.changes import Upsert
from ingest.daemon import PUBLISH_BATCH, Daemon, DaemonConfig
from quipfeed.embedded_redis import EmbeddedRedis
from quipfeed.runtime import embedder_for, open_store
from quipfeed.settings import Settings
from retrieval.embedder import Embedder, Vectors
from retrieval.post import Post
from retrieval.schema import dense_text, post_payload, sparse_document
from retrieval.search import Searcher
from retrieval.store import Hit, PostStore, StoreQuery, StoreSummary

DEFAULT_RATES = (25, 50, 100, 200, 400, 800, 1600, 3200)
# p99 of fewer than ~100 queries is the slowest one or two: 10/s over 10 s steps gives 100.
DEFAULT_QUERY_RATE = 10.0
SOAK_WINDOW_S = 60
DEVSET_QUERIES = Path(__file__).resolve().parents[1] / "retrieval/devset/sample_queries.jsonl"


class TimedEmbedder:
    """The real embedder, recording when each text's embed call started and ended."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        # A text can be embedded more than once (two posts saying "lol" are both kept: too
        # short to fingerprint), so every span is kept and matched to the write after it.
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.calls: list[float] = []
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        vectors = self.inner.embed(texts)
        ended = time.perf_counter()
        with self._lock:
            self.calls.append(ended - started)
            for text in texts:
                self.spans.setdefault(text, []).append((started, ended))
        return vectors

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed_queries(texts)

    def span_before(self, text: str, moment: float) -> tuple[float, float] | None:
        """The last embed call of `text` that ended by `moment`."""
        done = [s for s in self.spans.get(text, ()) if s[1] <= moment]
        return max(done) if done else None


class TimedStore:
    """The real store, recording when each post's upsert started and ended and how long each
    query took. Everything else passes straight through."""

    def __init__(self, inner: PostStore) -> None:
        self.inner = inner
        self.writes: dict[str, tuple[float, float]] = {}
        self.queries: list[float] = []
        self._lock = threading.Lock()

    def upsert(self, posts: Sequence[Post], dense: Sequence[Sequence[float]]) -> None:
        started = time.perf_counter()
        self.inner.upsert(posts, dense)
        ended = time.perf_counter()
        with self._lock:
            for post in posts:
                self.writes[post.id] = (started, ended)

    def delete(self, post_ids: Sequence[str]) -> None:
        self.inner.delete(post_ids)

    def sync(self) -> None:
        self.inner.sync()

    def delete_where(
        self,
        *,
        native_id: str | None = None,
        author_id: str | None = None,
        created_before: datetime | None = None,
    ) -> None:
        self.inner.delete_where(
            native_id=native_id, author_id=author_id, created_before=created_before
        )

    def query(self, request: StoreQuery) -> list[Hit]:
        started = time.perf_counter()
        hits = self.inner.query(request)
        with self._lock:
            self.queries.append(time.perf_counter() - started)
        return hits

    def get(self, post_ids: Sequence[str]) -> list[Post]:
        return self.inner.get(post_ids)

    def count(self) -> int:
        return self.inner.count()

    def summary(self) -> StoreSummary:
        return self.inner.summary()

    def close(self) -> None:
        self.inner.close()


@dataclass
class Limits:
    freshness_p99_ms: float = 1000.0
    query_p99_ms: float = 200.0


@dataclass
class CpuClock:
    """CPU seconds of this process and of the Redis server, read at a point in time."""

    redis_pidfile: Path | None = None
    process: float = 0.0
    redis: float = 0.0
    wall: float = field(default_factory=time.perf_counter)

    def read(self) -> CpuClock:
        t = os.times()
        return CpuClock(self.redis_pidfile, t.user + t.system, _proc_cpu(self.redis_pidfile))


def _proc_cpu(pidfile: Path | None) -> float:
    """CPU seconds of the process named in `pidfile` (0 when unknown: not Linux, gone)."""
    try:
        pid = int(pidfile.read_text().strip()) if pidfile else 0
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _rss_mib(pid: int, other_pidfile: Path | None) -> float:
    """Resident memory of `pid` plus the process named in `other_pidfile`, in MiB."""
    pids = [pid]
    try:
        if other_pidfile:
            pids.append(int(other_pidfile.read_text().strip()))
    except (OSError, ValueError):
        pass
    total_kib = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return round(total_kib / 1024, 1)


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile(list(values), q) * 1000, 1) if values else 0.0


def _mean_ms(values: Sequence[float]) -> float:
    return round(sum(values) / len(values) * 1000, 2) if values else 0.0


def query_texts() -> list[str]:
    """The dev set's queries (a realistic mix of event and topic questions)."""
    if DEVSET_QUERIES.is_file():
        with DEVSET_QUERIES.open(encoding="utf-8") as f:
            texts = [json.loads(line)["query"] for line in f if line.strip()]
        if texts:
            return texts
    return ["earthquake", "election results", "what are people saying about the game"]


async def run_step(
    rate: float,
    seconds: float,
    posts: list[Post],
    bus: Bus,
    store: TimedStore,
    embedder: TimedEmbedder,
    searcher: Searcher,
    query_embedder: TimedEmbedder,
    queries: list[str],
    query_rate: float,
    config: DaemonConfig,
    cpu: CpuClock,
    drain_s: float,
) -> dict[str, Any]:
    """Offer `posts` at `rate` through a fresh daemon on the shared bus and store, with
    searches at `query_rate` meanwhile; measure every post and query."""
    source = RateSource(posts, rate)
    daemon = Daemon([source], bus, store, embedder, config)
    stop = asyncio.Event()
    before = cpu.read()
    query_spans: list[float] = []
    q_embed_before = len(query_embedder.calls)
    q_store_before = len(store.queries)
    query_errors = 0

    async def one_query(text: str) -> None:
        nonlocal query_errors
        started = time.perf_counter()
        try:
            await asyncio.to_thread(searcher.search, text, k=10)
        except Exception:  # a failing query is a finding, not a crash of the simulation
            query_errors += 1
            return
        query_spans.append(time.perf_counter() - started)

    async def query_load(done: asyncio.Event) -> None:
        """Open loop: a query every 1/query_rate s whether or not the last one finished, so
        a slow store shows up as latency (queueing included), not as fewer queries."""
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        i = 0
        while not done.is_set() and query_rate > 0:
            tasks.append(asyncio.create_task(one_query(queries[i % len(queries)])))
            i += 1
            delay = start + i / query_rate - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(done.wait(), delay)
                except TimeoutError:
                    pass
        await asyncio.gather(*tasks)

    rss_samples: list[tuple[float, float]] = []  # (seconds into the step, MiB)

    async def sample_rss(done: asyncio.Event) -> None:
        """This process's and Redis's resident memory every few seconds: a soak's growth."""
        t0 = time.perf_counter()
        while not done.is_set():
            rss_samples.append((time.perf_counter() - t0, _rss_mib(os.getpid(), cpu.redis_pidfile)))
            try:
                await asyncio.wait_for(done.wait(), 5.0)
            except TimeoutError:
                pass

    ingest_done = asyncio.Event()
    querier = asyncio.create_task(query_load(ingest_done))
    sampler = asyncio.create_task(sample_rss(ingest_done))
    runner = asyncio.create_task(daemon.run(stop, once=True))
    started = time.perf_counter()
    # The source takes `seconds`; the backlog then gets `drain_s` to clear before we call it.
    finished, _ = await asyncio.wait([runner], timeout=seconds * 1.5 + drain_s)
    drained = bool(finished)
    if not drained:
        stop.set()
        await runner
    elapsed = time.perf_counter() - started
    ingest_done.set()
    await querier
    await sampler
    after = cpu.read()
    backlog = await bus.lag()

    fresh: list[float] = []
    # A long step (a soak) is also reported per window of SOAK_WINDOW_S by send time, so
    # freshness that degrades as the store grows shows up rather than averaging away.
    by_window: dict[int, list[float]] = {}
    first_sent = min(source.sent_at.values(), default=0.0)
    stage_bus: list[float] = []
    stage_embed: list[float] = []
    stage_write: list[float] = []
    for post in posts:
        sent = source.sent_at.get(post.id)
        written = store.writes.get(post.id)
        if sent is None or written is None:
            continue
        span = embedder.span_before(dense_text(post), written[0])
        if span is None:
            continue
        fresh.append(written[1] - sent)
        by_window.setdefault(int((sent - first_sent) // SOAK_WINDOW_S), []).append(
            written[1] - sent
        )
        stage_bus.append(span[0] - sent)
        stage_embed.append(span[1] - span[0])
        # Embed end → upsert end: the write plus the hand-off between the two threads.
        stage_write.append(written[1] - span[1])
    indexed = len(fresh)
    sent_times = sorted(source.sent_at.values())
    last_write = max((store.writes[p.id][1] for p in posts if p.id in store.writes), default=0.0)
    achieved = indexed / (last_write - sent_times[0]) if indexed and sent_times else 0.0
    total_fresh = sum(fresh) or 1.0
    m = daemon.metrics.registry
    batches = m.get_sample_value("quipfeed_batch_seconds_count") or 0.0
    batch_sum = m.get_sample_value("quipfeed_batch_seconds_sum") or 0.0
    fresh_count = m.get_sample_value("quipfeed_freshness_seconds_count") or 0.0
    fresh_sum = m.get_sample_value("quipfeed_freshness_seconds_sum") or 0.0
    q_embed = query_embedder.calls[q_embed_before:]
    q_store = store.queries[q_store_before:]
    wall = after.wall - before.wall
    return {
        "offered_posts_per_s": rate,
        "posts": len(posts),
        "indexed": indexed,
        "achieved_posts_per_s": round(achieved, 1),
        "drained": drained and backlog == 0,
        "backlog_left": backlog,
        "seconds": round(elapsed, 2),
        "store_points_after": store.count(),
        "freshness_p50_ms": _ms(fresh, 0.5),
        "freshness_p99_ms": _ms(fresh, 0.99),
        "stages_p50_ms": {
            "bus": _ms(stage_bus, 0.5),
            "embed": _ms(stage_embed, 0.5),
            "write": _ms(stage_write, 0.5),
        },
        "stages_p99_ms": {
            "bus": _ms(stage_bus, 0.99),
            "embed": _ms(stage_embed, 0.99),
            "write": _ms(stage_write, 0.99),
        },
        "stage_share_of_freshness": {
            "bus": round(sum(stage_bus) / total_fresh, 3),
            "embed": round(sum(stage_embed) / total_fresh, 3),
            "write": round(sum(stage_write) / total_fresh, 3),
        },
        "daemon_metrics": {
            "batches": int(batches),
            "posts_per_batch": round(indexed / batches, 1) if batches else 0.0,
            "batch_seconds_mean_ms": round(batch_sum / batches * 1000, 1) if batches else 0.0,
            "freshness_seconds_mean_ms": (
                round(fresh_sum / fresh_count * 1000, 1) if fresh_count else 0.0
            ),
        },
        "queries": len(query_spans),
        "query_errors": query_errors,
        "query_p50_ms": _ms(query_spans, 0.5),
        "query_p99_ms": _ms(query_spans, 0.99),
        "query_embed_mean_ms": _mean_ms(q_embed),
        "query_store_mean_ms": _mean_ms(q_store),
        "query_store_p99_ms": _ms(q_store, 0.99),
        "windows": (
            [
                {
                    "from_s": w * SOAK_WINDOW_S,
                    "indexed": len(v),
                    "freshness_p50_ms": _ms(v, 0.5),
                    "freshness_p99_ms": _ms(v, 0.99),
                }
                for w, v in sorted(by_window.items())
            ]
            if seconds >= 2 * SOAK_WINDOW_S
            else []
        ),
        "rss_mib": {
            "first": rss_samples[0][1] if rss_samples else None,
            "peak": max((r for _, r in rss_samples), default=None),
            "last": rss_samples[-1][1] if rss_samples else None,
        },
        "load_avg": round(os.getloadavg()[0], 2),
        "cpu_cores_used": {
            "process": round((after.process - before.process) / wall, 2),
            "redis": round((after.redis - before.redis) / wall, 2),
        },
    }


async def bus_ceiling(
    bus: Bus, posts: list[Post], batch_size: int, cpu: CpuClock
) -> dict[str, Any]:
    """The bus alone, through `Bus.publish`/`read`/`ack` (the daemon's own calls and batch
    sizes, real post JSON): publish every post, then read and acknowledge them all. The
    indexer's share of the pipeline is what is left over."""
    before = cpu.read()
    started = time.perf_counter()
    for i in range(0, len(posts), PUBLISH_BATCH):
        chunk = posts[i : i + PUBLISH_BATCH]
        await bus.publish("bus-ceiling", [([Upsert(p)], str(i)) for p in chunk])
    published = time.perf_counter()
    consumed = 0
    while consumed < len(posts):
        entries = await bus.read("bus-ceiling", batch_size, 100)
        if not entries:
            break
        await bus.ack([e.entry_id for e in entries])
        consumed += len(entries)
    ended = time.perf_counter()
    after = cpu.read()
    await bus.trim()
    size = sum(len(p.model_dump_json()) for p in posts) / max(1, len(posts))
    return {
        "changes": len(posts),
        "mean_entry_bytes": round(size),
        "publish_per_s": round(len(posts) / (published - started)),
        "read_ack_per_s": round(consumed / (ended - published)) if consumed else 0,
        "round_trip_per_s": round(consumed / (ended - started)) if consumed else 0,
        "cpu_seconds": {
            "process": round(after.process - before.process, 2),
            "redis": round(after.redis - before.redis, 2),
        },
    }


def point_sizes(posts: list[Post], dim: int) -> dict[str, Any]:
    """What one point carries, from the schema's own functions on real posts: the payload
    (post JSON under "doc" plus the indexed keys) and the BM25 sparse vector."""
    payload = [len(json.dumps(post_payload(p), ensure_ascii=False).encode()) for p in posts]
    sparse = [len(sparse_document(p)[0]) for p in posts]
    return {
        "sample": len(posts),
        "dense_bytes": dim * 4,
        "payload_bytes_mean": round(sum(payload) / len(payload)),
        "payload_bytes_p99": round(percentile([float(b) for b in payload], 0.99)),
        "sparse_nonzeros_mean": round(sum(sparse) / len(sparse), 1),
        # Qdrant keeps a sparse entry as a u32 index + f32 value.
        "sparse_bytes_mean": round(sum(sparse) / len(sparse) * 8),
    }


def _tree_bytes(path: Path, skip: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and skip not in f.parents)


def verdict(steps: list[dict[str, Any]], limits: Limits) -> tuple[float | None, str]:
    """The first rate that broke a limit, and why (which measured stage grew)."""
    cores = os.cpu_count() or 1
    for i, step in enumerate(steps):
        reasons: list[str] = []
        if not step["drained"]:
            reasons.append(
                f"backlog did not drain ({step['backlog_left']} left; achieved "
                f"{step['achieved_posts_per_s']} of {step['offered_posts_per_s']} posts/s offered)"
            )
        if step["freshness_p99_ms"] > limits.freshness_p99_ms:
            reasons.append(
                f"freshness p99 {step['freshness_p99_ms']} ms > {limits.freshness_p99_ms:.0f} ms"
            )
        if step["query_p99_ms"] > limits.query_p99_ms:
            reasons.append(f"query p99 {step['query_p99_ms']} ms > {limits.query_p99_ms:.0f} ms")
        if not reasons:
            continue
        base = steps[0]
        growth = {
            stage: step["stages_p99_ms"][stage] - base["stages_p99_ms"][stage]
            for stage in ("bus", "embed", "write")
        }
        grew = max(growth, key=lambda s: growth[s])
        share = step["stage_share_of_freshness"]
        why = [
            f"ingest: '{grew}' p99 grew most ({base['stages_p99_ms'][grew]} → "
            f"{step['stages_p99_ms'][grew]} ms; shares of freshness bus/embed/write "
            f"{share['bus']:.0%}/{share['embed']:.0%}/{share['write']:.0%})"
        ]
        ingest_broke = not step["drained"] or step["freshness_p99_ms"] > limits.freshness_p99_ms
        if grew == "bus" and ingest_broke:
            why.append(
                "posts queue on the bus behind earlier batches: the indexer (embed + write, "
                f"{step['daemon_metrics']['batch_seconds_mean_ms']} ms per batch of "
                f"{step['daemon_metrics']['posts_per_batch']}) cannot keep up"
            )
        if step["query_p99_ms"] > limits.query_p99_ms:
            why.append(
                f"query: store.query mean {step['query_store_mean_ms']} ms (p99 "
                f"{step['query_store_p99_ms']}), query embedding mean "
                f"{step['query_embed_mean_ms']} ms; the rest is waiting for a thread/the GIL"
            )
        used = step["cpu_cores_used"]["process"] + step["cpu_cores_used"]["redis"]
        load = step["load_avg"]
        why.append(
            f"CPU: {used:.2f} of {cores} cores used (process {step['cpu_cores_used']['process']}, "
            f"redis {step['cpu_cores_used']['redis']}), load average {load:.1f}"
            + (" — CPU-bound" if used >= 0.85 * cores else "")
            + (
                " — the machine is oversubscribed (load > cores): other processes took the "
                "CPU this pipeline waited for, so the ceiling here is lower than on an idle box"
                if load > cores and used < 0.85 * cores
                else ""
            )
        )
        previous = steps[i - 1]["offered_posts_per_s"] if i else None
        return step["offered_posts_per_s"], "; ".join(reasons) + ". " + "; ".join(why) + (
            f". Last good step: {previous} posts/s." if previous else "."
        )
    return None, "no limit broken up to the highest rate tried"


async def simulate(
    settings: Settings,
    embedder: Embedder,
    rates: Sequence[float] = DEFAULT_RATES,
    step_seconds: float = 10.0,
    query_rate: float = DEFAULT_QUERY_RATE,
    limits: Limits | None = None,
    drain_s: float | None = None,
    bus_changes: int = 10_000,
) -> dict[str, Any]:
    """Measure the bus alone (`bus_changes` changes; 0 skips it), then run the steps in order
    on one Redis, bus and Qdrant Edge shard; stop after the first that breaks a limit.
    Returns the figures (also what `--json` prints)."""
    limits = limits or Limits()
    drain = step_seconds if drain_s is None else drain_s
    all_posts = real_posts(int(sum(max(1, round(r * step_seconds)) for r in rates)))
    queries = query_texts()
    load_before = os.getloadavg()
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quipfeed-sim-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        url = redis.ensure_running()
        local = settings.model_copy(deep=True)
        local.data_dir = Path(tmp)
        timed_embedder = TimedEmbedder(embedder)
        query_embedder = TimedEmbedder(embedder)
        store = TimedStore(open_store(local, embedder.dim))
        import redis.asyncio as aioredis

        bus = Bus(aioredis.from_url(url), "sim:posts", "indexers")
        searcher = Searcher(store, query_embedder)
        config = DaemonConfig(
            workers=settings.ingest.workers,
            batch_size=settings.ingest.batch_size,
            deadline_ms=settings.ingest.batch_deadline_ms,
        )
        cpu = CpuClock(redis.pidfile)
        offset = 0
        try:
            bus_alone: dict[str, Any] | None = None
            if bus_changes:
                ceiling_bus = Bus(bus.client, "sim:bus-ceiling", "indexers")
                await ceiling_bus.ensure_group()
                bus_alone = await bus_ceiling(
                    ceiling_bus, real_posts(bus_changes), settings.ingest.batch_size, cpu
                )
            for rate in rates:
                n = max(1, round(rate * step_seconds))
                step = await run_step(
                    rate,
                    step_seconds,
                    all_posts[offset : offset + n],
                    bus,
                    store,
                    timed_embedder,
                    searcher,
                    query_embedder,
                    queries,
                    query_rate,
                    config,
                    cpu,
                    drain,
                )
                offset += n
                steps.append(step)
                broke, _ = verdict(steps, limits)
                if broke is not None:
                    break
        finally:
            await bus.client.aclose()
            points_written = store.count()
            store.close()
            disk_bytes = _tree_bytes(Path(tmp), Path(tmp) / "redis")
            redis.stop()
    broke_at, reason = verdict(steps, limits)
    sizes = point_sizes(all_posts[:2000], embedder.dim)
    sizes["store_disk_bytes_per_point"] = (
        round(disk_bytes / points_written) if points_written else None
    )
    return {
        "embedder": embedder.name,
        "batch_size": settings.ingest.batch_size,
        "indexer_workers": settings.ingest.workers,
        "step_seconds": step_seconds,
        "query_rate_per_s": query_rate,
        "limits": {
            "freshness_p99_ms": limits.freshness_p99_ms,
            "query_p99_ms": limits.query_p99_ms,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_before": round(load_before[0], 2),
            "load_avg_after": round(os.getloadavg()[0], 2),
        },
        "bus_alone": bus_alone,
        "point": sizes,
        "steps": steps,
        "broke_at_posts_per_s": broke_at,
        "last_good_posts_per_s": next(
            (
                s["offered_posts_per_s"]
                for s in reversed(steps)
                if s["offered_posts_per_s"] != broke_at
            ),
            None,
        ),
        "why": reason,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"embedder {result['embedder']}, batch {result['batch_size']}, "
        f"{result['indexer_workers']} indexer worker(s), {result['step_seconds']} s per step, "
        f"{result['query_rate_per_s']} queries/s; {result['machine']['cpu_count']} cores, "
        f"load avg {result['machine']['load_avg_before']} → {result['machine']['load_avg_after']}",
    ]
    bus = result.get("bus_alone")
    if bus:
        lines.append(
            f"bus alone ({bus['changes']} changes of ~{bus['mean_entry_bytes']} B): publish "
            f"{bus['publish_per_s']}/s, read+ack {bus['read_ack_per_s']}/s, both "
            f"{bus['round_trip_per_s']}/s (CPU s: process {bus['cpu_seconds']['process']}, "
            f"redis {bus['cpu_seconds']['redis']})"
        )
    point = result.get("point")
    if point:
        lines.append(
            f"one point: dense {point['dense_bytes']} B, BM25 {point['sparse_nonzeros_mean']} "
            f"terms (~{point['sparse_bytes_mean']} B), payload {point['payload_bytes_mean']} B "
            f"mean / {point['payload_bytes_p99']} B p99; shard on disk "
            f"{point['store_disk_bytes_per_point']} B/point (preallocated segment files "
            "dominate below ~100k points)"
        )
    lines += [
        "offered  achieved  fresh p50/p99 ms   bus/embed/write p99 ms    query p50/p99 ms"
        "  (store)   cpu proc/redis  points",
    ]
    for s in result["steps"]:
        p99 = s["stages_p99_ms"]
        lines.append(
            f"{s['offered_posts_per_s']:>7} {s['achieved_posts_per_s']:>9} "
            f"{s['freshness_p50_ms']:>8}/{s['freshness_p99_ms']:<8} "
            f"{p99['bus']:>8}/{p99['embed']}/{p99['write']:<10} "
            f"{s['query_p50_ms']:>8}/{s['query_p99_ms']:<7} ({s['query_store_mean_ms']})  "
            f"{s['cpu_cores_used']['process']:>5}/{s['cpu_cores_used']['redis']:<5} "
            f"{s['store_points_after']:>7}"
            + ("" if s["drained"] else f"  backlog {s['backlog_left']}")
        )
    for s in result["steps"]:
        if s["windows"]:
            lines.append(
                f"soak at {s['offered_posts_per_s']} posts/s, per minute (fresh p50/p99 ms):"
            )
            lines.append(
                "  "
                + "  ".join(
                    f"{w['freshness_p50_ms']}/{w['freshness_p99_ms']}" for w in s["windows"]
                )
            )
            rss = s["rss_mib"]
            lines.append(
                f"  RSS (this process + Redis) MiB: first {rss['first']}, peak {rss['peak']}, "
                f"last {rss['last']}"
            )
    broke = result["broke_at_posts_per_s"]
    lines.append(f"broke at: {broke} posts/s" if broke is not None else "did not break")
    lines.append(f"why: {result['why']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--embedder", default=None, help="sentence-transformers or static")
    parser.add_argument("--max-rate", type=float, default=max(DEFAULT_RATES))
    parser.add_argument("--start-rate", type=float, default=25.0)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--query-rate", type=float, default=DEFAULT_QUERY_RATE)
    parser.add_argument("--max-freshness-ms", type=float, default=1000.0)
    parser.add_argument("--max-query-ms", type=float, default=200.0)
    parser.add_argument("--bus-changes", type=int, default=10_000, help="0: skip the bus alone")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.start_rate <= 0 or args.max_rate < args.start_rate or args.step_seconds <= 0:
        parser.error("need 0 < --start-rate <= --max-rate and --step-seconds > 0")
    settings = Settings()
    if args.embedder:
        settings.embedder.kind = args.embedder
    rates = []
    rate = args.start_rate
    while rate <= args.max_rate:
        rates.append(rate)
        rate *= 2
    embedder = embedder_for(settings)
    result = asyncio.run(
        simulate(
            settings,
            embedder,
            rates,
            args.step_seconds,
            args.query_rate,
            Limits(args.max_freshness_ms, args.max_query_ms),
            bus_changes=args.bus_changes,
        )
    )
    print(json.dumps(result, indent=2) if args.json else render(result))


if __name__ == "__main__":
    main()
