"""Offline retrieval quality: recall@10, nDCG@10 and MRR over labelled queries.

Posts are indexed into a fresh Qdrant Edge shard (embedded here, not through ingest; vectors are
cached on disk per embedder and corpus), every query runs at its own `now` (posts after it are
invisible), and the same queries run in several configurations so the gain of each stage is
visible: dense, sparse, hybrid (fusion only), + recency, then the full `Searcher` pipeline with
one stage at a time (+understanding, +diversity) and all of them (the product default). Fusion
methods and recency rules are compared on the same candidates.

Every figure is reported for each *split* of the queries (`tune`, the part defaults are chosen
on, and `test`, the part they are reported on; a file without splits is one part, `all`), by
query kind and by language, with dense-only beside it.

Relevance is binary. recall@k is *capped*: hits in the top k divided by min(k, |relevant|), so
a query with 50 relevant posts can still score 1.0 (a feed bot shows ten, not fifty). Queries
with no relevant post (`kind` "unanswerable": the feed cannot answer them) are left out of those
means; for them the right outcome is an empty or low-confidence result, reported on its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder, Vectors
from retrieval.eval_index import index_posts
from retrieval.post import Post
from retrieval.ranking import FUSIONS, RankingOptions, rank
from retrieval.search import Searcher, SearchOptions
from retrieval.store import Hit

# The sample bundled with quipfeed (devset/README.md): posts and 67 labelled sample queries.
DEVSET_POSTS = Path(__file__).parent / "devset" / "posts.jsonl"
DEVSET_QUERIES = Path(__file__).parent / "devset" / "sample_queries.jsonl"
# The full dev set: questions committed here, posts built from the public data beside the
# checkout (`make devset`); the airline tweets it uses may never be bundled.
FULL_QUERIES = Path(__file__).parent / "devset" / "queries.jsonl"
FULL_POSTS = Path(__file__).resolve().parents[1] / ".devset" / "posts.jsonl"

K = 10
ALL = "all"
Run = tuple[list[str], frozenset[str]]
Progress = Callable[[str, int, int], None]


class EvaluationError(ValueError):
    """The posts or queries file is missing or malformed; the message names the line."""


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: frozenset[str]
    now: datetime | None
    kind: str | None = None
    lang: str | None = None
    split: str | None = None
    story: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.relevant)


def pick_devset(posts: Path | None, queries: Path | None) -> tuple[Path, Path, str | None]:
    """The posts and queries to evaluate: the given ones, else the full dev set when its posts
    are built, else the bundled sample; with a sentence for a person when it fell back."""
    if posts is not None or queries is not None:
        return posts or DEVSET_POSTS, queries or DEVSET_QUERIES, None
    if FULL_POSTS.is_file() and FULL_QUERIES.is_file():
        return FULL_POSTS, FULL_QUERIES, None
    return (
        DEVSET_POSTS,
        DEVSET_QUERIES,
        "the full dev set is not built (`make devset` builds it from ../shared/data); "
        "evaluating the bundled sample",
    )


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


def score_run(runs: Sequence[Run], k: int = K) -> dict[str, float]:
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


def _query_line(row: Any) -> LabelledQuery:
    text, relevant = row["query"], row["relevant"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'query' must be non-empty text")
    if not isinstance(relevant, list) or not all(isinstance(r, str) for r in relevant):
        raise ValueError("'relevant' must be a list of post ids")
    now = row.get("now")
    moment = datetime.fromisoformat(now) if now else None
    if moment is not None and moment.tzinfo is None:
        raise ValueError("'now' must carry a time zone (RFC 3339)")

    def text_field(name: str) -> str | None:
        value = row.get(name)
        return value if isinstance(value, str) and value else None

    return LabelledQuery(
        text,
        frozenset(relevant),
        moment,
        kind=text_field("kind"),
        lang=text_field("lang"),
        split=text_field("split"),
        story=text_field("story"),
    )


def read_queries(path: Path) -> list[LabelledQuery]:
    if not path.is_file():
        raise EvaluationError(f"queries file not found: {path}")
    out: list[LabelledQuery] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(_query_line(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise EvaluationError(f"{path}:{number}: bad query line: {exc}") from exc
    if not out:
        raise EvaluationError(f"{path}: no queries")
    return out


# The product's stages, switched on one after another (the ablation).
STAGES = ("dense", "sparse", "hybrid", "+recency", "+understanding", "+diversity", "default (all)")
PIPELINES: dict[str, SearchOptions] = {
    "+understanding": SearchOptions(diversity=None, threads=False),
    "+diversity": SearchOptions(understand=False, threads=False),
    "default (all)": SearchOptions(),
}


class _MemoEmbedder:
    """The evaluation embeds each query text in several configurations: embed it once."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.memo: dict[tuple[bool, str], Vectors] = {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def name(self) -> str:
        return self.inner.name

    def _rows(self, texts: Sequence[str], queries: bool) -> Vectors:
        missing = [t for t in dict.fromkeys(texts) if (queries, t) not in self.memo]
        if missing:
            embed = self.inner.embed_queries if queries else self.inner.embed
            for text, row in zip(missing, embed(missing), strict=True):
                self.memo[(queries, text)] = row[None, :]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self.memo[(queries, t)] for t in texts])

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._rows(texts, False)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._rows(texts, True)


@dataclass
class _Outcome:
    """Every configuration's ranked ids for one query, and the default's confidence flag."""

    ranked: dict[str, list[str]]
    low_confidence: bool = False
    empty: bool = False


def _ids(hits: Sequence[Hit], k: int) -> list[str]:
    return [h.post.id for h in hits[:k]]


def _run_query(
    searcher: Searcher,
    q: LabelledQuery,
    k: int,
    default: SearchOptions,
    variants: Mapping[str, RankingOptions],
) -> _Outcome:
    request = searcher.request(q.query, k, as_of=q.now)
    request = dataclasses.replace(request, limit=default.candidates)
    dense, sparse = searcher.candidates(request)
    now = q.now or datetime.now().astimezone()
    plain = dataclasses.replace(default.ranking, decay="none")
    ranked = {
        "dense": _ids(dense, k),
        "sparse": _ids(sparse, k),
        "hybrid": _ids(rank(dense, sparse, now, plain).hits, k),
        "+recency": _ids(rank(dense, sparse, now, default.ranking).hits, k),
    }
    for name, variant in variants.items():
        ranked[name] = _ids(rank(dense, sparse, now, variant).hits, k)
    outcome = _Outcome(ranked)
    for name, stages in PIPELINES.items():
        opts = dataclasses.replace(stages, ranking=default.ranking, hnsw_ef=default.hnsw_ef)
        try:
            result = searcher.find(q.query, k, as_of=q.now, options=opts, widen=False)
        except ValueError:
            # A query the pipeline refuses (a malformed operator) finds nothing.
            outcome.ranked[name] = []
            continue
        outcome.ranked[name] = _ids(result.hits, k)
        if name == "default (all)":
            outcome.low_confidence = result.low_confidence
            outcome.empty = not result.hits
    return outcome


def default_variants(default: RankingOptions) -> dict[str, RankingOptions]:
    """Fusion methods and recency rules compared on the same candidates (`fusion`/`recency`)."""
    out = {f"fusion {f}": dataclasses.replace(default, fusion=f) for f in FUSIONS}
    out["recency none"] = dataclasses.replace(default, decay="none")
    out["recency fixed 24h"] = dataclasses.replace(default, decay="fixed")
    out["recency adaptive"] = dataclasses.replace(default, decay="adaptive")
    return out


def _group(
    queries: Sequence[LabelledQuery],
    outcomes: Sequence[_Outcome],
    key: Callable[[LabelledQuery], str],
) -> dict[str, list[tuple[LabelledQuery, _Outcome]]]:
    groups: dict[str, list[tuple[LabelledQuery, _Outcome]]] = {}
    for q, o in zip(queries, outcomes, strict=True):
        groups.setdefault(key(q), []).append((q, o))
    return dict(sorted(groups.items()))


def _scores(pairs: Sequence[tuple[LabelledQuery, _Outcome]], config: str, k: int) -> dict[str, Any]:
    runs = [(o.ranked[config], q.relevant) for q, o in pairs if q.answerable]
    return {**score_run(runs, k), "queries": len(runs)}


def _unanswerable(pairs: Sequence[tuple[LabelledQuery, _Outcome]]) -> dict[str, Any]:
    none = [o for q, o in pairs if not q.answerable]
    some = [o for q, o in pairs if q.answerable]
    flagged = sum(1 for o in none if o.low_confidence or o.empty)
    false_alarms = sum(1 for o in some if o.low_confidence or o.empty)
    return {
        "queries": len(none),
        "flagged": round(flagged / len(none), 4) if none else None,
        "false_alarms": round(false_alarms / len(some), 4) if some else None,
    }


def _part(
    pairs: Sequence[tuple[LabelledQuery, _Outcome]], configs: Sequence[str], k: int
) -> dict[str, Any]:
    """Every figure for one split: the default, the ablation, kinds, languages, unanswerable."""
    qs = [q for q, _ in pairs]
    os_ = [o for _, o in pairs]

    def beside_dense(groups: dict[str, list[tuple[LabelledQuery, _Outcome]]]) -> dict[str, Any]:
        return {
            name: {"default": _scores(g, "default (all)", k), "dense": _scores(g, "dense", k)}
            for name, g in groups.items()
            if any(q.answerable for q, _ in g)
        }

    return {
        **_scores(pairs, "default (all)", k),
        "dense": _scores(pairs, "dense", k),
        "ablation": {c: _scores(pairs, c, k) for c in configs},
        "by_kind": beside_dense(_group(qs, os_, lambda q: q.kind or "unlabelled")),
        "by_language": beside_dense(_group(qs, os_, lambda q: q.lang or "unknown")),
        "unanswerable": _unanswerable(pairs),
    }


def evaluate(
    posts_path: Path,
    queries_path: Path,
    embedder: Embedder,
    work_dir: Path,
    *,
    k: int = K,
    options: SearchOptions | None = None,
    variants: Mapping[str, RankingOptions] | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Index `posts_path` into a fresh shard under `work_dir`, run every query, score it.

    Returns the default's {"recall@10", "ndcg@10", "mrr"} over all answerable queries, and
    "ablation" {config: metrics}, "dense" (the baseline), "by_kind" and "by_language" ({group:
    {"default", "dense"}}), "unanswerable", "splits" ({split: the same figures}), "fusion" and
    "recency" (the compared variants, per split), "queries", "posts", "config", "embedder".
    `variants` adds ranking options compared on the same candidates (default: every fusion
    method and recency rule). `cache_dir` keeps post vectors between runs.
    """
    queries = read_queries(Path(queries_path))
    posts = list(read_posts(Path(posts_path)))
    if not posts:
        raise EvaluationError(f"{posts_path}: no posts")
    default = options or SearchOptions()
    compared = dict(variants) if variants is not None else default_variants(default.ranking)
    shard = Path(work_dir) / f"eval-shard-{uuid.uuid4().hex[:8]}"
    store = EdgeStore(shard, embedder.dim)
    try:
        index_posts(store, posts, embedder, cache_dir=cache_dir, progress=progress)
        searcher = Searcher(store, _MemoEmbedder(embedder), default)
        outcomes = []
        for i, q in enumerate(queries):
            outcomes.append(_run_query(searcher, q, k, default, compared))
            if progress is not None:
                progress("queries", i + 1, len(queries))
    finally:
        store.close()
        shutil.rmtree(shard, ignore_errors=True)
    return _report(queries, outcomes, compared, k, len(posts), embedder.name, default)


def _report(
    queries: Sequence[LabelledQuery],
    outcomes: Sequence[_Outcome],
    compared: Mapping[str, RankingOptions],
    k: int,
    posts: int,
    embedder: str,
    default: SearchOptions,
) -> dict[str, Any]:
    every = list(zip(queries, outcomes, strict=True))
    splits = _group(queries, outcomes, lambda q: q.split or ALL)
    whole = _part(every, STAGES, k)
    r = default.ranking
    return {
        **whole,
        "splits": {name: _part(pairs, STAGES, k) for name, pairs in splits.items()},
        "variants": {
            name: {split: _scores(pairs, name, k) for split, pairs in splits.items()}
            for name in compared
        },
        "queries": len(queries),
        "posts": posts,
        "config": f"default: hybrid ({r.fusion}, dense weight {r.dense_weight}), recency "
        f"{r.decay} (floor {r.floor}), query understanding, diversity, threads",
        "embedder": embedder,
    }
