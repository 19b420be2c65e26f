"""Offline retrieval quality: recall@10, nDCG@10 and MRR over labelled queries.

Posts are indexed into a fresh Qdrant Edge shard (embedded here, not through ingest), every
query runs at its own `now` (posts after it are invisible), and the same queries run in four
configurations so the gain of each part is visible: dense, sparse, hybrid, hybrid+decay, then
the full `Searcher` pipeline with one stage at a time (+diversity, +understanding) and all of
them (the product default), and the engagement boost at a few weights on top of the default.

Relevance is binary. recall@k is *capped*: hits in the top k divided by min(k, |relevant|),
so a query with 50 relevant posts can still score 1.0 (a feed bot shows ten, not fifty).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from retrieval import schema
from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.post import Post
from retrieval.query_plan import Fusion
from retrieval.search import Searcher, SearchOptions
from retrieval.store import Mode

# The labelled dev set bundled with quipfeed (see devset/README.md for how it was built).
DEVSET_POSTS = Path(__file__).parent / "devset" / "posts.jsonl"
DEVSET_QUERIES = Path(__file__).parent / "devset" / "sample_queries.jsonl"

K = 10
DEFAULT_HALF_LIFE = timedelta(hours=24)
EMBED_BATCH = 256


class EvaluationError(ValueError):
    """The posts or queries file is missing or malformed; the message names the line."""


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: frozenset[str]
    now: datetime | None
    kind: str | None = None


def recall_at_k(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int = K) -> float:
    if not relevant:
        return 0.0
    found = sum(1 for pid in ranked[:k] if pid in relevant)
    return found / min(k, len(relevant))


def ndcg_at_k(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int = K) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, pid in enumerate(ranked[:k]) if pid in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def reciprocal_rank(
    ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int = K
) -> float:
    for i, pid in enumerate(ranked[:k]):
        if pid in relevant:
            return 1.0 / (i + 1)
    return 0.0


def score_run(runs: Sequence[tuple[Sequence[str], frozenset[str]]], k: int = K) -> dict[str, float]:
    """Mean recall@k, nDCG@k and MRR over (ranked ids, relevant ids) pairs."""
    n = len(runs)
    if n == 0:
        return {f"recall@{k}": 0.0, f"ndcg@{k}": 0.0, "mrr": 0.0}
    return {
        f"recall@{k}": round(sum(recall_at_k(r, rel, k) for r, rel in runs) / n, 4),
        f"ndcg@{k}": round(sum(ndcg_at_k(r, rel, k) for r, rel in runs) / n, 4),
        "mrr": round(sum(reciprocal_rank(r, rel, k) for r, rel in runs) / n, 4),
    }


def read_posts(path: Path) -> Iterator[Post]:
    if not path.is_file():
        raise EvaluationError(f"posts file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Post.model_validate_json(line)
            except ValueError as exc:
                raise EvaluationError(f"{path}:{number}: not a post: {exc}") from exc


def read_queries(path: Path) -> list[LabelledQuery]:
    if not path.is_file():
        raise EvaluationError(f"queries file not found: {path}")
    out: list[LabelledQuery] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row: Any = json.loads(line)
                text, relevant = row["query"], row["relevant"]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("'query' must be non-empty text")
                if not isinstance(relevant, list) or not all(isinstance(r, str) for r in relevant):
                    raise ValueError("'relevant' must be a list of post ids")
                now = row.get("now")
                moment = datetime.fromisoformat(now) if now else None
                if moment is not None and moment.tzinfo is None:
                    raise ValueError("'now' must carry a time zone (RFC 3339)")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise EvaluationError(f"{path}:{number}: bad query line: {exc}") from exc
            kind = row.get("kind")
            out.append(
                LabelledQuery(
                    text, frozenset(relevant), moment, kind if isinstance(kind, str) else None
                )
            )
    if not out:
        raise EvaluationError(f"{path}: no queries")
    return out


def index_posts(store: EdgeStore, posts: Sequence[Post], embedder: Embedder) -> None:
    for start in range(0, len(posts), EMBED_BATCH):
        batch = posts[start : start + EMBED_BATCH]
        vectors = embedder.embed([schema.dense_text(p) for p in batch])
        store.upsert(batch, vectors.tolist())


CONFIGS: dict[str, tuple[Mode, bool]] = {
    "dense": ("dense", False),
    "sparse": ("sparse", False),
    "hybrid": ("hybrid", False),
    "hybrid+decay": ("hybrid", True),
}

# Full-pipeline configurations (hybrid + decay underneath), each a set of `SearchOptions`.
PIPELINES: dict[str, SearchOptions] = {
    "+diversity": SearchOptions(understand=False, threads=False),
    "+understanding": SearchOptions(diversity=None, threads=False),
    "default (all)": SearchOptions(),
}
ENGAGEMENT_WEIGHTS = (0.1, 0.25, 0.5)


def evaluate(
    posts_path: Path,
    queries_path: Path,
    embedder: Embedder,
    work_dir: Path,
    *,
    half_life: timedelta = DEFAULT_HALF_LIFE,
    fusions: Sequence[Fusion] = ("rrf", "dbsf"),
    k: int = K,
) -> dict[str, Any]:
    """Index `posts_path` into a fresh shard under `work_dir`, run every query, score it.

    Returns {"recall@10", "ndcg@10", "mrr", "queries", "config", "ablation": {config: metrics},
    "fusion": {fusion: hybrid+decay metrics}, "engagement": {weight: metrics},
    "by_kind": {kind: metrics}, "embedder"}. The headline figures are for the product's
    default: the full pipeline (hybrid, first fusion, decay, understanding, diversity).
    """
    queries = read_queries(Path(queries_path))
    posts = list(read_posts(Path(posts_path)))
    if not posts:
        raise EvaluationError(f"{posts_path}: no posts")
    shard = Path(work_dir) / f"eval-shard-{uuid.uuid4().hex[:8]}"
    store = EdgeStore(shard, embedder.dim, fusion=fusions[0])
    try:
        index_posts(store, posts, embedder)
        searcher = Searcher(store, embedder)
        requests = {
            name: [
                searcher.request(
                    q.query, k, as_of=q.now, mode=mode, half_life=half_life if decay else None
                )
                for q in queries
            ]
            for name, (mode, decay) in CONFIGS.items()
        }

        def run(name: str, fusion: Fusion) -> list[tuple[list[str], frozenset[str]]]:
            store.fusion = fusion
            return [
                ([h.post.id for h in store.query(req)], q.relevant)
                for req, q in zip(requests[name], queries, strict=True)
            ]

        ablation = {name: score_run(run(name, fusions[0]), k) for name in CONFIGS}
        store.fusion = fusions[0]

        def pipeline(options: SearchOptions) -> list[tuple[list[str], frozenset[str]]]:
            return [
                (
                    [
                        h.post.id
                        for h in searcher.search(
                            q.query, k, as_of=q.now, half_life=half_life, options=options
                        )
                    ],
                    q.relevant,
                )
                for q in queries
            ]

        pipelines = {name: pipeline(opts) for name, opts in PIPELINES.items()}
        for name, runs in pipelines.items():
            ablation[name] = score_run(runs, k)
        default = PIPELINES["default (all)"]
        engagement = {
            f"weight {w}": score_run(pipeline(dataclasses.replace(default, engagement_weight=w)), k)
            for w in ENGAGEMENT_WEIGHTS
        }
        engagement["weight 0 (default)"] = ablation["default (all)"]
        by_fusion = {f: score_run(run("hybrid+decay", f), k) for f in fusions}
        by_fusion_plain = {f: score_run(run("hybrid", f), k) for f in fusions}
        headline_runs = pipelines["default (all)"]
        kinds: dict[str, list[tuple[list[str], frozenset[str]]]] = {}
        for (ranked, rel), q in zip(headline_runs, queries, strict=True):
            kinds.setdefault(q.kind or "unlabelled", []).append((ranked, rel))
    finally:
        store.close()
        shutil.rmtree(shard, ignore_errors=True)
    headline = ablation["default (all)"]
    return {
        **headline,
        "queries": len(queries),
        "posts": len(posts),
        "config": f"default: hybrid+decay ({fusions[0]}, half-life {half_life}), query "
        "understanding, diversity, threads",
        "embedder": embedder.name,
        "ablation": ablation,
        "fusion": {"hybrid+decay": by_fusion, "hybrid": by_fusion_plain},
        "engagement": engagement,
        "by_kind": {
            kind: {**score_run(r, k), "queries": len(r)} for kind, r in sorted(kinds.items())
        },
    }
