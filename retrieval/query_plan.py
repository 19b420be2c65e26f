"""One backend-neutral description of a search, which each store translates to its client.

Both stores build the same plan from a `StoreQuery`, so hybrid fusion, filters and recency
decay are decided once, here, and an Edge shard and a Qdrant server rank identically.

Shape of the query the stores run (Qdrant's query API):

    final = mode "dense"/"sparse": nearest on that vector
            mode "hybrid":         fusion(nearest dense, nearest sparse)
    with a half-life, final = formula($score * (floor + (1 - floor) * exp_decay(created_at,
                              target=as_of, half_life)))
                              over the `candidates` best of the undecayed query.

Every stage carries the same filter (created_at in [since, as_of], authors, hashtags, langs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from retrieval import schema
from retrieval.store import Mode, StoreQuery

Fusion = Literal["rrf", "dbsf"]
# Chosen on the dev set (retrieval/devset/README.md, MiniLM, half-life 24 h, floor 0.1):
# RRF recall@10 0.846 / nDCG 0.846 / MRR 0.912 vs DBSF 0.841 / 0.845 / 0.902; without decay
# RRF 0.730 / 0.733 / 0.824 vs DBSF 0.728 / 0.726 / 0.796. Close; RRF is rank-based, so it does
# not depend on how BM25 and cosine scores happen to be distributed.
DEFAULT_FUSION: Fusion = "rrf"
RRF_K = 60
MAX_LIMIT = 1_000
MIN_CANDIDATES = 100
MAX_HNSW_EF = 10_000
# Extra results fetched beyond `limit` so that ties at the cut are broken the same everywhere.
TIE_MARGIN = 10
# Recency multiplies relevance by floor + (1 - floor) * 0.5^(age / half_life). The floor keeps
# relevance in charge for posts many half-lives old (a replay of 2012 data asked "now"):
# without it every score underflows to 0 and the order is arbitrary.
RECENCY_FLOOR = 0.1


@dataclass(frozen=True)
class FilterSpec:
    created_gte: datetime | None = None
    created_lte: datetime | None = None
    authors: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    langs: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.created_gte or self.created_lte or self.authors or self.hashtags or self.langs
        )


@dataclass(frozen=True)
class DecaySpec:
    target: datetime
    half_life_s: float
    floor: float = RECENCY_FLOOR

    @property
    def target_rfc3339(self) -> str:
        return schema.rfc3339(self.target)

    def factor(self, created_at: datetime) -> float:
        """The multiplier the store applied: halves (above the floor) per half-life of age."""
        distance = abs((self.target - created_at).total_seconds())
        return self.floor + (1.0 - self.floor) * math.pow(0.5, distance / self.half_life_s)


@dataclass(frozen=True)
class QueryPlan:
    mode: Mode
    limit: int
    candidates: int
    dense: list[float]
    sparse_indices: list[int]
    sparse_values: list[float]
    filter: FilterSpec
    decay: DecaySpec | None
    fusion: Fusion
    rrf_k: int = RRF_K
    hnsw_ef: int | None = None

    @property
    def base_modes(self) -> tuple[Literal["dense", "sparse"], ...]:
        """The plain vector searches the plan is built from (and `why` is explained by)."""
        if self.mode == "dense":
            return ("dense",)
        if self.mode == "sparse":
            return ("sparse",)
        return ("dense", "sparse")


def plan_query(
    request: StoreQuery, dim: int, fusion: Fusion = DEFAULT_FUSION, now: datetime | None = None
) -> QueryPlan:
    """Validate a request against the store's vector size and describe how to run it.

    Raises `ValueError` for a malformed request (wrong vector size, bad limit, unknown mode,
    since after as_of, non-positive half-life).
    """
    if request.mode not in ("hybrid", "dense", "sparse"):
        raise ValueError(f"unknown search mode {request.mode!r}")
    if not 1 <= request.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {request.limit}")
    dense = [float(x) for x in request.dense]
    if request.mode != "sparse" and len(dense) != dim:
        raise ValueError(f"query vector has {len(dense)} dimensions, the store has {dim}")
    if request.since and request.as_of and request.since > request.as_of:
        raise ValueError("since is after as_of: the window is empty")
    if request.hnsw_ef is not None and not 1 <= request.hnsw_ef <= MAX_HNSW_EF:
        raise ValueError(f"hnsw_ef must be between 1 and {MAX_HNSW_EF}, got {request.hnsw_ef}")
    decay: DecaySpec | None = None
    if request.half_life is not None:
        seconds = request.half_life.total_seconds()
        if seconds <= 0:
            raise ValueError("half_life must be positive")
        decay = DecaySpec(
            target=request.as_of or now or datetime.now(UTC),
            half_life_s=seconds,
            floor=RECENCY_FLOOR,
        )
    indices, values = schema.sparse_query(request.text) if request.mode != "dense" else ([], [])
    spec = FilterSpec(
        created_gte=request.since,
        created_lte=request.as_of,
        authors=_clean(request.authors, lambda a: a.strip().lstrip("@")),
        hashtags=_clean(request.hashtags, lambda t: t.strip().lstrip("#").lower()),
        langs=_clean(request.langs, lambda s: s.strip()),
    )
    return QueryPlan(
        mode=request.mode,
        limit=request.limit,
        candidates=max(MIN_CANDIDATES, 10 * request.limit),
        dense=dense,
        sparse_indices=indices,
        sparse_values=values,
        filter=spec,
        decay=decay,
        fusion=fusion,
        hnsw_ef=request.hnsw_ef,
    )


def _clean(values: Sequence[str], fix: Callable[[str], str]) -> tuple[str, ...]:
    return tuple(sorted({fix(v) for v in values if v and fix(v)}))
