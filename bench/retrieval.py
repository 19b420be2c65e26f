"""Retrieval benchmark: embedder throughput, query latency at scale, HNSW recall vs exact.

    quipfeed bench retrieval [--posts 100000,1000000] [--queries 200] [--json]
    python bench/retrieval.py …   (the same)

For each size, the dev set's posts are replicated (fresh ids, times shifted a minute per
replica, vectors jittered) into a fresh Qdrant Edge shard. Latency is measured store-only (a
prepared StoreQuery: hybrid + decay) and for the full pipeline (`Searcher.search`: validation,
query understanding, query embedding, hybrid + decay, diversity, thread context), before and
after `optimize()` builds the HNSW index. After it, the dense search's recall@10 against exact
search is printed beside its latency for several `hnsw_ef` values. Memory: peak RSS of the
process and the shard's size on disk. `load_avg` records how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as q

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import schema
from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder, open_embedder
from retrieval.evaluation import read_posts, read_queries
from retrieval.search import Searcher, SearchOptions

DEVSET = Path(__file__).resolve().parents[1] / "retrieval" / "devset"


def throughput(embedder: Embedder, texts: list[str], seconds: float = 10.0) -> float:
    embedder.embed(texts[:32])  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = texts[done % len(texts) : done % len(texts) + 256] or texts[:256]
        embedder.embed(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def fill(store: EdgeStore, embedder: Embedder, n: int, seed: int) -> float:
    posts = list(read_posts(DEVSET / "posts.jsonl"))
    base = embedder.embed([schema.dense_text(p) for p in posts])
    rng = np.random.default_rng(seed)
    start, written, replica = time.perf_counter(), 0, 0
    while written < n:
        take = min(len(posts), n - written)
        batch = [
            p.model_copy(
                update={
                    "id": f"{p.id}#r{replica}",
                    "created_at": p.created_at + timedelta(minutes=replica),
                }
            )
            for p in posts[:take]
        ]
        vectors = base[:take] + rng.normal(0, 0.02, size=(take, base.shape[1])).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(0, take, 1024):
            store.upsert(batch[i : i + 1024], vectors[i : i + 1024].tolist())
        written += take
        replica += 1
    return n / (time.perf_counter() - start)


def latencies(store: EdgeStore, searcher: Searcher, texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    half_life = timedelta(hours=24)
    requests = [searcher.request(t, 10, half_life=half_life) for t in texts]
    samples = []
    for r in requests:
        t0 = time.perf_counter()
        store.query(r)
        samples.append(time.perf_counter() - t0)
    out["store_only/hybrid+decay"] = percentiles(samples)
    plain = SearchOptions(understand=False, diversity=None, threads=False)
    for label, options in (("full/hybrid+decay", plain), ("full/default", searcher.options)):
        samples = []
        for t in texts:
            t0 = time.perf_counter()
            searcher.search(t, 10, half_life=half_life, options=options)
            samples.append(time.perf_counter() - t0)
        out[label] = percentiles(samples)
    return out


def hnsw_recall(store: EdgeStore, embedder: Embedder, texts: list[str]) -> dict[str, Any]:
    """Dense top-10 overlap of the HNSW index with exact search, and the dense search's
    latency, at several `hnsw_ef` values (the query-time knob `SearchOptions.hnsw_ef` sets).

    Replicated posts are near-duplicates (each post ~posts/2,772 times, jittered), the hardest
    case for a graph index: many equidistant neighbours. Real feeds are kinder.
    """
    shard = store._s  # the bench looks under the hood on purpose: exact vs index on one shard
    out: dict[str, Any] = {}
    vectors = embedder.embed_queries(texts)
    exact_ids: list[set[str]] = []
    exact_s: list[float] = []
    for vector in vectors:
        query = q.Query.Nearest(vector.tolist(), using=schema.DENSE)
        t0 = time.perf_counter()
        exact = shard.query(
            q.QueryRequest(
                limit=10,
                query=query,
                with_payload=False,
                with_vector=False,
                params=q.SearchParams(exact=True),
            )
        )
        exact_s.append(time.perf_counter() - t0)
        exact_ids.append({str(p.id) for p in exact})
    out["exact"] = {"recall@10": 1.0, **percentiles(exact_s)}
    for ef in (None, 32, 64, 128, 256, 512):
        total, samples = 0.0, []
        for vector, truth in zip(vectors, exact_ids, strict=True):
            query = q.Query.Nearest(vector.tolist(), using=schema.DENSE)
            t0 = time.perf_counter()
            approx = shard.query(
                q.QueryRequest(
                    limit=10,
                    query=query,
                    with_payload=False,
                    with_vector=False,
                    params=q.SearchParams(hnsw_ef=ef) if ef else None,
                )
            )
            samples.append(time.perf_counter() - t0)
            total += len(truth & {str(p.id) for p in approx}) / max(1, len(truth))
        out[f"ef={ef or 'default'}"] = {
            "recall@10": round(total / len(vectors), 4),
            **percentiles(samples),
        }
    return out


def rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def disk_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def progress(partial: dict[str, Any]) -> None:
    """Figures so far, on stderr: a long run (1M posts) shows what it has measured."""
    print(json.dumps({**partial, "peak_rss_mib": rss_mib()}), file=sys.stderr, flush=True)


def run_size(
    embedder: Embedder, n: int, sample: list[str], work: Path, optimize: bool = True
) -> dict[str, Any]:
    """Fill a fresh shard with `n` posts and measure it (see module doc)."""
    out: dict[str, Any] = {"posts": n, "load_avg_start": os.getloadavg()[0]}
    store = EdgeStore(work / f"shard-{n}", embedder.dim)
    try:
        t0 = time.perf_counter()
        out["upsert_posts_per_s"] = round(fill(store, embedder, n, 7), 1)
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        progress(out)
        searcher = Searcher(store, embedder)
        out["before_optimize"] = latencies(store, searcher, sample)
        progress(out)
        if optimize:
            t0 = time.perf_counter()
            store.optimize()
            out["optimize_s"] = round(time.perf_counter() - t0, 1)
            progress(out)
            out["after_optimize"] = latencies(store, searcher, sample)
            out["hnsw_dense_recall@10_vs_exact"] = hnsw_recall(store, embedder, sample[:100])
        out["peak_rss_mib"] = rss_mib()
        out["shard_disk_mib"] = disk_mib(work / f"shard-{n}")
        out["load_avg_end"] = os.getloadavg()[0]
    finally:
        store.close()
    return out


def run(
    sizes: list[int],
    *,
    queries: int = 200,
    embedder_kind: str = "static",
    cache_dir: Path | None = None,
    embedders: bool = False,
    optimize: bool = True,
) -> dict[str, Any]:
    """Every figure as one JSON-able dict (what `quipfeed bench retrieval --json` prints)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = cache_dir or Path(tempfile.gettempdir()) / "quipfeed-cache"
    report: dict[str, Any] = {
        "embedder_for_store": embedder_kind,
        "cpus": os.cpu_count(),
        "queries": queries,
    }
    texts = [p.text for p in read_posts(DEVSET / "posts.jsonl") if p.text.strip()]
    if embedders:
        speeds = {}
        for label, kind, quant in (
            ("minilm", "sentence-transformers", False),
            ("minilm-int8", "sentence-transformers", True),
            ("static", "static", False),
        ):
            emb = open_embedder(kind, quantize=quant, cache_dir=cache)
            speeds[label] = round(throughput(emb, texts, 20.0 if kind == "static" else 30.0), 1)
        report["embed_texts_per_s"] = speeds
    embedder = open_embedder(embedder_kind, cache_dir=cache)
    asked = [x.query for x in read_queries(DEVSET / "sample_queries.jsonl")]
    rng = random.Random(7)
    sample = [rng.choice(asked) for _ in range(queries)]
    work = Path(tempfile.mkdtemp(prefix="quipfeed-bench-"))
    try:
        report["sizes"] = [run_size(embedder, n, sample, work, optimize) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--posts", default="100000", help="comma-separated sizes, e.g. 100000,1000000"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embedder", default="static", choices=["static", "sentence-transformers"])
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "quipfeed-cache"
    )
    parser.add_argument(
        "--embedders",
        action="store_true",
        help="also measure texts/s of MiniLM, MiniLM int8 and static",
    )
    parser.add_argument("--no-optimize", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in str(args.posts).split(",") if x.strip()]
    report = run(
        sizes,
        queries=args.queries,
        embedder_kind=args.embedder,
        cache_dir=args.cache_dir,
        embedders=args.embedders,
        optimize=not args.no_optimize,
    )
    print(json.dumps(report) if args.json else human(report))
    return 0


def human(report: dict[str, Any]) -> str:
    lines = [f"{k:28} {v}" for k, v in report.items() if k != "sizes"]
    for size in report.get("sizes", []):
        lines.append(f"--- {size['posts']:,} posts")
        for key, value in size.items():
            if isinstance(value, dict):
                lines.append(f"  {key}")
                lines += [f"    {k:26} {v}" for k, v in value.items()]
            elif key != "posts":
                lines.append(f"  {key:28} {value}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
