"""Fusion and recency over a query's candidates, in Python, the same for every store backend.

The store answers two plain nearest-neighbour searches (dense cosine, BM25), each the best
`candidates` posts that pass the query's filters. This module turns those two ranked lists into
one ranking:

1. **Fusion** (`RankingOptions.fusion`), each measured by `quipfeed eval retrieval`:
   - `rrf`: reciprocal rank fusion, Σ wᵢ / (k + rankᵢ);
   - `dbsf`: distribution-based score fusion (Qdrant's): each list's scores scaled by
     (s − (μ − 3σ)) / 6σ into [0, 1], then summed with the weights;
   - `weighted`: each list min–max scaled over its candidates, then w · dense + (1 − w) · BM25;
   - `dense-first`: cosine, with scaled BM25 only as a tie-breaker (ε · BM25).
   A post found by one list only counts 0 from the other.
2. **Recency** multiplies the fused score by `floor + (1 − floor) · 0.5^(age / half_life)`, age
   measured back from `now`. The half-life is either fixed or *adaptive*: read off the ages of
   the query's best undecayed matches (`adaptive_half_life`), so a story that broke an hour ago
   prefers the last hour and one three days old is not judged by yesterday's posts.

A time word the asker used ("right now", "this week") caps the adaptive half-life: it is a
preference, never a filter.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from retrieval.store import Hit

FusionKind = Literal["rrf", "dbsf", "weighted", "dense-first"]
FUSIONS: tuple[FusionKind, ...] = ("rrf", "dbsf", "weighted", "dense-first")
DecayKind = Literal["none", "fixed", "adaptive"]

RRF_K = 60
TIE_BREAK = 1e-3
MIN_HALF_LIFE = timedelta(minutes=30)
MAX_HALF_LIFE = timedelta(days=30)


@dataclass(frozen=True)
class RankingOptions:
    """How candidates become one ranking; the defaults are the evaluation's choice (README)."""

    fusion: FusionKind = "weighted"
    # Weight of the dense list (BM25 gets 1 − dense_weight) in rrf, dbsf and weighted.
    dense_weight: float = 0.7
    rrf_k: int = RRF_K
    decay: DecayKind = "adaptive"
    # Fixed decay's half-life, and the cap on an adaptive one when no time word caps it.
    half_life: timedelta = timedelta(hours=24)
    floor: float = 0.5
    # Adaptive: half-life = scale × the median age of the `adaptive_top` best matches.
    adaptive_top: int = 10
    adaptive_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; use one of {', '.join(FUSIONS)}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError("dense_weight must be between 0 and 1")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError("floor must be between 0 and 1")
        if self.half_life <= timedelta(0):
            raise ValueError("half_life must be positive")


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    if span <= 0:
        return dict.fromkeys(scores, 1.0)
    return {pid: (s - low) / span for pid, s in scores.items()}


def _dbsf(scores: dict[str, float]) -> dict[str, float]:
    if len(scores) < 2:
        return dict.fromkeys(scores, 1.0)
    values = list(scores.values())
    mean, sd = statistics.fmean(values), statistics.pstdev(values)
    if sd <= 0:
        return dict.fromkeys(scores, 1.0)
    low = mean - 3 * sd
    return {pid: min(1.0, max(0.0, (s - low) / (6 * sd))) for pid, s in scores.items()}


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    order = sorted(scores, key=lambda pid: (-scores[pid], pid))
    return {pid: i + 1 for i, pid in enumerate(order)}


def fuse(
    dense: dict[str, float], sparse: dict[str, float], options: RankingOptions
) -> dict[str, float]:
    """One score per candidate id from the two lists' raw scores (cosine, BM25)."""
    w = options.dense_weight
    ids = set(dense) | set(sparse)
    if options.fusion == "rrf":
        dr, sr = _ranks(dense), _ranks(sparse)
        k = options.rrf_k
        return {
            pid: (w / (k + dr[pid]) if pid in dr else 0.0)
            + ((1 - w) / (k + sr[pid]) if pid in sr else 0.0)
            for pid in ids
        }
    if options.fusion == "dbsf":
        dn, sn = _dbsf(dense), _dbsf(sparse)
    else:
        dn, sn = _minmax(dense), _minmax(sparse)
    if options.fusion == "dense-first":
        # Cosine leads; BM25 only orders posts the embedder scores (almost) the same.
        return {pid: dense.get(pid, -1.0) + TIE_BREAK * sn.get(pid, 0.0) for pid in ids}
    return {pid: w * dn.get(pid, 0.0) + (1 - w) * sn.get(pid, 0.0) for pid in ids}


def decay_factor(age: timedelta, half_life: timedelta, floor: float) -> float:
    """The recency multiplier: 1 at age 0, halving (above `floor`) every `half_life`."""
    seconds = abs(age.total_seconds())
    return floor + (1.0 - floor) * math.pow(0.5, seconds / half_life.total_seconds())


def adaptive_half_life(
    ages: Sequence[timedelta], options: RankingOptions, cap: timedelta | None = None
) -> timedelta:
    """The half-life a query's best matches call for: `adaptive_scale` × their median age,
    within [MIN_HALF_LIFE, cap or MAX_HALF_LIFE]."""
    upper = min(cap, MAX_HALF_LIFE) if cap is not None else MAX_HALF_LIFE
    if not ages:
        return max(MIN_HALF_LIFE, min(options.half_life, upper))
    median = statistics.median(abs(a.total_seconds()) for a in ages)
    seconds = median * options.adaptive_scale
    return max(MIN_HALF_LIFE, min(timedelta(seconds=seconds), upper))


@dataclass(frozen=True)
class Ranked:
    """The ranking of one query: hits best first, and the half-life that was applied."""

    hits: list[Hit]
    half_life: timedelta | None


def rank(
    dense_hits: Sequence[Hit],
    sparse_hits: Sequence[Hit],
    now: datetime,
    options: RankingOptions,
    *,
    half_life: timedelta | None = None,
    cap: timedelta | None = None,
) -> Ranked:
    """Fuse the two candidate lists and apply recency (module doc).

    `half_life` fixes the half-life (an explicit request wins over the options); otherwise
    the options decide, and `cap` (a time word's half-life) caps the one they choose.
    Each hit's `why` keeps "dense"/"sparse" raw scores, "fused" and "recency".
    """
    posts = {h.post.id: h.post for h in [*dense_hits, *sparse_hits]}
    dense = {h.post.id: h.why.get("dense", h.score) for h in dense_hits}
    sparse = {h.post.id: h.why.get("sparse", h.score) for h in sparse_hits}
    fused = fuse(dense, sparse, options)
    applied: timedelta | None = half_life
    if applied is None and options.decay == "fixed":
        applied = min(options.half_life, cap) if cap else options.half_life
    elif applied is None and options.decay == "adaptive":
        best = sorted(fused, key=lambda pid: (-fused[pid], pid))[: options.adaptive_top]
        ages = [now - posts[pid].created_at for pid in best]
        applied = adaptive_half_life(ages, options, cap)
    elif applied is None and cap is not None:
        applied = cap
    hits: list[Hit] = []
    for pid, score in fused.items():
        why: dict[str, float] = {"fused": score}
        if pid in dense:
            why["dense"] = dense[pid]
        if pid in sparse:
            why["sparse"] = sparse[pid]
        final = score
        if applied is not None:
            factor = decay_factor(now - posts[pid].created_at, applied, options.floor)
            why["recency"] = factor
            # dense-first scores are cosines (can be ≤ 0): decay the distance from -1 instead.
            final = (
                (score + 1.0) * factor - 1.0 if options.fusion == "dense-first" else score * factor
            )
        hits.append(Hit(post=posts[pid], score=final, why=why))
    hits.sort(key=lambda h: (-h.score, h.post.id))
    return Ranked(hits=hits, half_life=applied)
