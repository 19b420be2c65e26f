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
from retrieval.plan import QueryPlan
from retrieval.store import Hit


def explain(
    plan: QueryPlan,
    final: Sequence[tuple[str, float, Mapping[str, Any]]],
    bases: Mapping[str, Mapping[str, float]],
) -> list[Hit]:
    hits: list[Hit] = []
    for pid, score, payload in final:
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
