"""Turn a store's raw results into `Hit`s that say why each post matched.

`why` keys a caller may rely on (each present only when it applies):
- "dense": cosine similarity to the query, when the post was among the dense candidates;
- "sparse": BM25 score, when the post was among the sparse candidates;
- "fused": the fusion score (hybrid mode) before recency;
- "recency": the decay multiplier in (0, 1] (a half-life set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from retrieval import schema
from retrieval.query_plan import QueryPlan
from retrieval.store import Hit


def explain(
    plan: QueryPlan,
    final: Sequence[tuple[str, float, Mapping[str, Any]]],
    bases: Mapping[str, Mapping[str, float]],
) -> list[Hit]:
    # Equal scores are common (RRF sums of the same ranks, BM25 of same-length posts) and come
    # back in arbitrary order; the stores fetch a few extra and ties are broken by point id, so
    # results are deterministic and the same on every backend.
    ordered = sorted(final, key=lambda row: (-float(f"{row[1]:.6g}"), row[0]))[: plan.limit]
    hits: list[Hit] = []
    for pid, score, payload in ordered:
        if not payload:
            continue
        post = schema.post_from_payload(dict(payload))
        why: dict[str, float] = {}
        for kind, scores in bases.items():
            if pid in scores:
                why[kind] = float(scores[pid])
        if plan.decay is not None:
            factor = plan.decay.factor(post.created_at)
            why["recency"] = factor
            if plan.mode == "hybrid" and factor > 0:
                why["fused"] = float(score) / factor
        elif plan.mode == "hybrid":
            why["fused"] = float(score)
        hits.append(Hit(post=post, score=float(score), why=why))
    return hits
