"""Diversity and honesty in a result list: one story once, no voice filling the context.

`diversify(hits, k, query)` re-ranks the store's ranked candidates (a few times `k` of them):

1. **Near-duplicates and reposts collapse** into the best-ranked copy: "RT @x: …" and copies
   whose word sets overlap by `DUPLICATE_JACCARD` or more. The kept hit's `why["duplicates"]`
   says how many copies it stands for (the crowd repeating a post is itself a signal).
2. **At most `per_author` posts per author**, except authors the query names (its words match
   their handle or display name, e.g. "latest from popehat") or filters on: asking for a person
   means wanting their posts.
3. **MMR** (maximal marginal relevance): each next pick maximises
   `λ · relevance − (1 − λ) · max similarity to the posts already picked`, relevance being the
   store's score scaled to [0, 1] over the candidates and similarity the Jaccard overlap of word
   sets. Word sets, not dense vectors: they need no extra round trip for vectors, behave the same
   on every store backend, and what makes a second post redundant in a context block is mostly
   that it says the same words.

Everything here is pure Python over at most a few hundred short texts (< 1 ms for 30 hits).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from retrieval.post import Post
from retrieval.store import Hit

DUPLICATE_JACCARD = 0.7
MMR_LAMBDA = 0.85
PER_AUTHOR = 3

_RT_PREFIX = re.compile(r"^\s*RT\s+@\w+:?\s*", re.IGNORECASE)
_NOISE = re.compile(r"https?://\S+|@[\w.]+")
_WORD = re.compile(r"\w+")
# Question words that also occur in display names ("The Onion", "What's Up"): never a name.
_COMMON = frozenset(
    "the and are what who how why was were has have about from with that this they their "
    "people saying posting latest news new".split()
)


@dataclass(frozen=True)
class DiversityOptions:
    """How hard to diversify; the defaults are what the evaluation measured."""

    per_author: int | None = PER_AUTHOR
    mmr_lambda: float | None = MMR_LAMBDA
    collapse_duplicates: bool = True


def words(text: str) -> frozenset[str]:
    """The word set a post is compared by: lowercased words, no RT prefix, links or mentions."""
    body = _NOISE.sub(" ", _RT_PREFIX.sub("", text))
    return frozenset(w for w in _WORD.findall(body.lower()) if len(w) > 1)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _author(post: Post) -> str | None:
    return post.author_id or post.author


def named_authors(query: str, hits: Iterable[Hit]) -> set[str]:
    """Authors among `hits` whom the query names by handle or display name."""
    asked = {w for w in _WORD.findall(query.lower()) if len(w) > 2} - _COMMON
    named: set[str] = set()
    for hit in hits:
        post = hit.post
        who = _author(post)
        if who is None:
            continue
        parts = set(_WORD.findall((post.author or "").lower().split(".")[0]))
        parts |= set(_WORD.findall((post.author_name or "").lower()))
        if parts & asked:
            named.update(x for x in (post.author, post.author_id) if x)
    return named


def collapse_duplicates(hits: Sequence[Hit]) -> list[Hit]:
    """Hits with near-duplicates folded into the best-ranked copy (order kept)."""
    kept: list[Hit] = []
    kept_words: list[frozenset[str]] = []
    copies: list[int] = []
    for hit in hits:
        ws = words(hit.post.text)
        for i, other in enumerate(kept_words):
            if ws and (ws == other or jaccard(ws, other) >= DUPLICATE_JACCARD):
                copies[i] += 1
                break
        else:
            kept.append(hit)
            kept_words.append(ws)
            copies.append(0)
    return [
        replace(h, why={**h.why, "duplicates": float(n)}) if n else h
        for h, n in zip(kept, copies, strict=True)
    ]


def diversify(
    hits: Sequence[Hit],
    k: int,
    query: str,
    options: DiversityOptions = DiversityOptions(),
    *,
    exempt_authors: Iterable[str] = (),
) -> list[Hit]:
    """The best `k` of `hits` (ranked candidates), re-ranked for diversity (see module doc)."""
    pool = collapse_duplicates(hits) if options.collapse_duplicates else list(hits)
    if not pool:
        return []
    exempt = set(exempt_authors) | named_authors(query, pool)
    cap = options.per_author
    top = max(h.score for h in pool)
    low = min(h.score for h in pool)
    span = (top - low) or 1.0
    relevance = [(h.score - low) / span for h in pool]
    pool_words = [words(h.post.text) for h in pool]
    chosen: list[int] = []
    per_author: dict[str, int] = {}
    left = list(range(len(pool)))
    lam = options.mmr_lambda
    while left and len(chosen) < k:
        best, best_value = -1, float("-inf")
        for i in left:
            post = pool[i].post
            who = _author(post)
            free = post.author in exempt or post.author_id in exempt
            if cap is not None and who and not free and per_author.get(who, 0) >= cap:
                continue
            if lam is None:
                value = relevance[i]
            else:
                redundancy = max((jaccard(pool_words[i], pool_words[j]) for j in chosen), default=0)
                value = lam * relevance[i] - (1 - lam) * redundancy
            if value > best_value:
                best, best_value = i, value
        if best < 0:
            break  # every remaining candidate is from an author at the cap
        chosen.append(best)
        left.remove(best)
        who = _author(pool[best].post)
        if who:
            per_author[who] = per_author.get(who, 0) + 1
    return [pool[i] for i in chosen]
