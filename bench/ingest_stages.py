"""What one post costs at each ingest stage, each stage run alone: CPU µs per post.

The full-speed pipeline (`bench/ingest.py`) says how fast ingest goes; this says why. Every
stage of source → Redis Streams → indexer → Qdrant Edge runs here in isolation over the same
real posts, in batches of `--batch`, and reports the CPU it cost per post: this process's CPU
(all its threads: the tokenizer's and Edge's native threads count) and, for Redis commands,
redis-server's CPU too. CPU time is far less sensitive to other load on the machine than wall
time, so the sums are a floor that holds on a busy box:

- `python_us`: CPU this process spends per post, the source side and the indexer together
  (one daemon process runs both);
- `redis_us`: CPU redis-server spends per post;
- `ceiling_one_process`: 1e6 / python_us, posts/s if one daemon process got a whole core;
- `ceiling_two_cores`: 2e6 / (python_us + redis_us), posts/s if the work split perfectly
  over two cores (it cannot: one process holds the GIL for most of it).

Run: `python -m bench.ingest_stages [--posts 5000] [--batch 512] [--json]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qdrant_edge as q
import redis.asyncio as aioredis

from bench.ingest import real_posts
from ingest.bus import Bus, encode
from ingest.changes import Upsert
from ingest.fingerprint import fingerprint
from ingest.indexer import _CLAIM_FINGERPRINTS
from quipfeed.embedded_redis import EmbeddedRedis
from quipfeed.runtime import embedder_for
from quipfeed.settings import Settings
from retrieval import schema
from retrieval.edge_store import EdgeStore
from retrieval.post import Post, point_id
from retrieval.trending import TrendCounter, topics_of


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it cannot be read."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Meter:
    """Collects per-stage CPU µs per post for `n` posts."""

    def __init__(self, n: int, redis_pid: int | None = None) -> None:
        self.n = n
        self.redis_pid = redis_pid
        self.rows: dict[str, dict[str, float]] = {}

    def start(self) -> tuple[float, float, float]:
        return time.process_time(), _cpu_of(self.redis_pid), time.perf_counter()

    def stop(self, name: str, mark: tuple[float, float, float], n: int | None = None) -> None:
        per = 1e6 / (n or self.n)
        cpu, redis_cpu, wall = mark
        self.rows[name] = {
            "python_us": round((time.process_time() - cpu) * per, 1),
            "redis_us": round((_cpu_of(self.redis_pid) - redis_cpu) * per, 1),
            "wall_us": round((time.perf_counter() - wall) * per, 1),
        }

    def time(self, name: str, fn: Callable[[], Any]) -> Any:
        mark = self.start()
        out = fn()
        self.stop(name, mark)
        return out


async def run(posts: int = 5000, batch: int = 512) -> dict[str, Any]:
    settings = Settings()
    settings.embedder.kind = "static"
    embedder = await asyncio.to_thread(embedder_for, settings)
    embedder.embed(["warm up the tokenizer"])
    sample = real_posts(posts)
    n = len(sample)
    batches = [sample[i : i + batch] for i in range(0, n, batch)]
    lines = [p.model_dump_json() for p in sample]
    m = _Meter(n)

    # --- the source side: parse + validate an event, encode it for the bus ----------------
    parsed = m.time(
        "source: parse + validate (Post JSON)",
        lambda: [Post.model_validate_json(line) for line in lines],
    )
    m.time("source: encode for the bus", lambda: [encode(Upsert(p), 0) for p in parsed])

    # --- the indexer's CPU-only stages ---------------------------------------------------
    m.time("indexer: fingerprint", lambda: [fingerprint(p.text) for p in sample])
    m.time("indexer: trend topics (topics_of)", lambda: [topics_of(p) for p in sample])
    vectors = m.time(
        "indexer: embed (static)",
        lambda: [embedder.embed([schema.dense_text(p) for p in b]) for b in batches],
    )

    def build(b: list[Post], v: Any) -> list[q.Point]:
        return [
            q.Point(
                point_id(p.id),
                {schema.DENSE: row, schema.SPARSE: q.SparseVector(*schema.sparse_document(p))},
                schema.post_payload(p),
            )
            for p, row in zip(b, v.tolist(), strict=True)
        ]

    m.time("store: BM25 sparse vector", lambda: [schema.sparse_document(p) for p in sample])
    m.time("store: payload (doc JSON + keys)", lambda: [schema.post_payload(p) for p in sample])
    m.time(
        "store: whole point build",
        lambda: [build(b, v) for b, v in zip(batches, vectors, strict=True)],
    )
    with tempfile.TemporaryDirectory(prefix="quipfeed-stages-") as tmp:
        store = EdgeStore(Path(tmp) / "shard", embedder.dim)
        mark = m.start()
        for b, v in zip(batches, vectors, strict=True):
            store.upsert(b, v)
        m.stop("store: upsert (point build + Edge update)", mark)
        mark = m.start()
        store.sync()
        m.stop("store: Edge sync, once for all", mark)
        sync_ms = m.rows["store: Edge sync, once for all"]["wall_us"] * n / 1000
        mark = m.start()
        for b, v in list(zip(batches, vectors, strict=True))[:3]:
            store.upsert(b, v)
            store.sync()
        m.stop("store: upsert + sync per batch", mark, sum(len(b) for b in batches[:3]))
        store.close()

        # --- Redis: publish, read, claim, trends, ack (client CPU + redis-server CPU) ---------
        redis = EmbeddedRedis(Path(tmp) / "redis")
        url = redis.ensure_running()
        m.redis_pid = redis.pid()
        client = aioredis.from_url(url)
        bus = Bus(client, "stages:posts", "indexers")
        await bus.ensure_group()
        mark = m.start()
        for i in range(0, n, 256):
            await bus.publish("src", [([Upsert(p)], str(i)) for p in parsed[i : i + 256]])
        m.stop("bus: publish (XADD, 256 a MULTI)", mark)
        read_ids: list[list[str]] = []
        mark = m.start()
        while entries := await bus.read("c0", batch, 10):
            read_ids.append([e.entry_id for e in entries])
        m.stop("bus: XREADGROUP + decode (validate)", mark)
        mark = m.start()
        for b in batches:
            flat = [x for p in b if (fp := fingerprint(p.text)) for x in (fp, p.id)]
            if flat:
                await client.eval(_CLAIM_FINGERPRINTS, 1, "stages:fp", *flat)
        m.stop("indexer: duplicate claim (fingerprint + EVAL)", mark)
        trends = TrendCounter(client, "stages:trend")
        mark = m.start()
        for b in batches:
            await trends.record(b)
        m.stop("indexer: trends.record (topics + EVAL)", mark)
        mark = m.start()
        for ids in read_ids:
            await bus.ack(ids)
        m.stop("bus: XACK (one EVAL a batch)", mark)
        await client.aclose()
        redis.stop()

    # The stages one post really goes through, in the order the pipeline runs them.
    path = [
        "source: parse + validate (Post JSON)",
        "bus: publish (XADD, 256 a MULTI)",
        "bus: XREADGROUP + decode (validate)",
        "indexer: duplicate claim (fingerprint + EVAL)",
        "indexer: embed (static)",
        "store: upsert (point build + Edge update)",
        "indexer: trends.record (topics + EVAL)",
        "bus: XACK (one EVAL a batch)",
    ]
    py = sum(m.rows[s]["python_us"] for s in path)
    rd = sum(m.rows[s]["redis_us"] for s in path)
    return {
        "posts": n,
        "batch": batch,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "stages_us_per_post": m.rows,
        "edge_sync_ms": round(sync_ms, 1),
        "path": path,
        "python_us": round(py, 1),
        "redis_us": round(rd, 1),
        "ceiling_one_process": round(1e6 / py),
        "ceiling_two_cores": round(2e6 / (py + rd)),
    }


def human(result: dict[str, Any]) -> str:
    lines = [f"{result['posts']} posts, batch {result['batch']}, load {result['load_avg_1m']}"]
    lines.append(f"  {'stage':<48} {'python µs':>10} {'redis µs':>9} {'wall µs':>9}")
    for name, row in result["stages_us_per_post"].items():
        mark = "*" if name in result["path"] else " "
        lines.append(
            f"{mark} {name:<48} {row['python_us']:>10} {row['redis_us']:>9} {row['wall_us']:>9}"
        )
    lines.append(
        f"* per post on the path: python {result['python_us']} µs, redis {result['redis_us']} µs"
        f" → ceiling {result['ceiling_one_process']} posts/s in one process,"
        f" {result['ceiling_two_cores']} posts/s on two ideal cores"
    )
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.posts, args.batch))
    print(json.dumps(result, indent=2) if args.json else human(result))


if __name__ == "__main__":
    main()
