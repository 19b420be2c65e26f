"""Engagement as a ranking signal: likes and reposts, where a source reports them.

`boost(hits, weight)` multiplies each score by `1 + weight · e / e_max`, where
`e = log1p(likes + 2 · reposts)` and `e_max` is the largest `e` among the candidates (so the
boost is scale-free: a quiet feed and a viral one weigh alike). Posts from sources that report
no counts (Mastodon via some servers, RSS, the CrisisLex tweets) get `e = 0`: no boost, and no
penalty beyond not being boosted. The weight is a setting whose default is chosen by
`quipfeed eval retrieval` (see retrieval/devset/README.md), not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from retrieval.post import Post
from retrieval.store import Hit

REPOST_WEIGHT = 2


def engagement(post: Post) -> float:
    """log1p(likes + 2 · reposts); 0 when the source reports neither."""
    likes = max(post.like_count or 0, 0)
    reposts = max(post.repost_count or 0, 0)
    return math.log1p(likes + REPOST_WEIGHT * reposts)


def boost(hits: Sequence[Hit], weight: float) -> list[Hit]:
    """`hits` rescored with the engagement boost and re-sorted, best first.

    `why["engagement"]` holds the multiplier applied (present only when it is above 1).
    """
    if weight <= 0 or not hits:
        return list(hits)
    signal = [engagement(h.post) for h in hits]
    top = max(signal)
    if top <= 0:
        return list(hits)
    out: list[Hit] = []
    for hit, e in zip(hits, signal, strict=True):
        factor = 1.0 + weight * e / top
        if factor > 1.0:
            hit = replace(hit, score=hit.score * factor, why={**hit.why, "engagement": factor})
        out.append(hit)
    out.sort(key=lambda h: (-h.score, h.post.id))
    return out
