"""Retrieval benchmark: embedder throughput, query latency at scale, HNSW recall vs exact.

    python bench/retrieval.py [--posts 100000] [--queries 200] [--embedder static] [--json]

The dev set's posts are replicated (ids suffixed, times shifted, vectors jittered) up to
--posts into a fresh Qdrant Edge shard. Latency is measured store-only (a prepared
StoreQuery) and full (Searcher: validation + query embedding + store), before and after
`optimize()` builds the HNSW index. HNSW recall@10 is measured against exact search on the
dense vector. Figures are printed; --json prints them as one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from retrieval.search import Searcher

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
    for label, half_life in (("hybrid", None), ("hybrid+decay", timedelta(hours=24))):
        requests = [searcher.request(t, 10, half_life=half_life) for t in texts]
        samples = []
        for r in requests:
            t0 = time.perf_counter()
            store.query(r)
            samples.append(time.perf_counter() - t0)
        out[f"store_only/{label}"] = percentiles(samples)
        samples = []
        for t in texts:
            t0 = time.perf_counter()
            searcher.search(t, 10, half_life=half_life)
            samples.append(time.perf_counter() - t0)
        out[f"full/{label}"] = percentiles(samples)
    return out


def hnsw_recall(store: EdgeStore, embedder: Embedder, texts: list[str]) -> dict[str, float]:
    """Dense top-10 overlap of the HNSW index with exact search, at a few `hnsw_ef` values.

    Replicated posts are near-duplicates (each post ~posts/2,772 times, jittered), the hardest
    case for a graph index: many equidistant neighbours. Real feeds are kinder.
    """
    shard = store._s  # the bench looks under the hood on purpose: exact vs index on one shard
    out: dict[str, float] = {}
    vectors = embedder.embed(texts)
    for ef in (None, 128, 512):
        total = 0.0
        for vector in vectors:
            query = q.Query.Nearest(vector.tolist(), using=schema.DENSE)
            approx = shard.query(
                q.QueryRequest(
                    limit=10,
                    query=query,
                    with_payload=False,
                    with_vector=False,
                    params=q.SearchParams(hnsw_ef=ef) if ef else None,
                )
            )
            exact = shard.query(
                q.QueryRequest(
                    limit=10,
                    query=query,
                    with_payload=False,
                    with_vector=False,
                    params=q.SearchParams(exact=True),
                )
            )
            truth = {str(p.id) for p in exact}
            total += len(truth & {str(p.id) for p in approx}) / max(1, len(truth))
        out[f"ef={ef or 'default'}"] = round(total / len(vectors), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report: dict[str, Any] = {
        "posts": args.posts,
        "embedder_for_store": args.embedder,
        "cpus": os.cpu_count(),
    }
    texts = [p.text for p in read_posts(DEVSET / "posts.jsonl") if p.text.strip()]
    if args.embedders:
        speeds = {}
        for label, kind, quant in (
            ("minilm", "sentence-transformers", False),
            ("minilm-int8", "sentence-transformers", True),
            ("static", "static", False),
        ):
            emb = open_embedder(kind, quantize=quant, cache_dir=args.cache_dir)
            speeds[label] = round(throughput(emb, texts, 20.0 if kind == "static" else 30.0), 1)
        report["embed_texts_per_s"] = speeds
    embedder = open_embedder(args.embedder, cache_dir=args.cache_dir)
    queries = [x.query for x in read_queries(DEVSET / "queries.jsonl")]
    rng = random.Random(7)
    sample = [rng.choice(queries) for _ in range(args.queries)]
    work = Path(tempfile.mkdtemp(prefix="quipfeed-bench-"))
    try:
        store = EdgeStore(work / "shard", embedder.dim)
        report["upsert_posts_per_s"] = round(fill(store, embedder, args.posts, 7), 1)
        searcher = Searcher(store, embedder)
        report["before_optimize"] = latencies(store, searcher, sample)
        t0 = time.perf_counter()
        store.optimize()
        report["optimize_s"] = round(time.perf_counter() - t0, 1)
        report["after_optimize"] = latencies(store, searcher, sample)
        report["hnsw_recall@10_vs_exact"] = hnsw_recall(store, embedder, sample[:100])
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
