"""Text in, ranked posts out: understands the ask, embeds it, asks the store, re-ranks.

The pipeline (`Searcher.find`), each stage behind a switch in `SearchOptions` so the evaluation
can measure what it earns:

1. validate (`BadSearch` for anything unusable: empty, over 10 kB, NUL, absurd windows);
2. understand the ask (`retrieval.query_syntax`): operators (`since:`, `until:`, `from:`,
   `lang:`, `#tag`, quoted phrases) become hard filters; time words ("right now", "this week")
   and "since the keynote" become recency preferences, never filters;
3. two store queries over the filtered posts: the best dense (cosine) and BM25 candidates;
4. fusion and recency in Python (`retrieval.ranking`): the same on every store backend;
5. quoted phrases kept only where the text has them; engagement boost (weight from evaluation);
6. diversity (`retrieval.diversity`): duplicates collapsed, per-author cap, MMR;
7. an empty answer in an explicit window widens it (×4, ×24, then none) and says so in
   `SearchResult.notes`;
8. thread context (`retrieval.threads`): replied-to and quoted posts attached to their hits.

`SearchResult.low_confidence` says when even the best dense match is weak: the feed probably
has nothing on the question, and a bot should say so rather than lean on the hits.

Each search logs one line (`search`, INFO): the query's length (never its text), k, mode, hits,
whether the window widened, and milliseconds. It carries the turn's `request_id` when the
process's log setup adds one (the composition root's `quipfeed.logs`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo

from retrieval.diversity import DiversityOptions, diversify
from retrieval.embedder import Embedder
from retrieval.engagement import boost
from retrieval.query_plan import MAX_HNSW_EF, MAX_LIMIT
from retrieval.query_syntax import (
    ParsedQuery,
    QueryNotUnderstood,
    clean_text,
    event_start,
    parse_query,
)
from retrieval.ranking import MIN_HALF_LIFE as MIN_PREFERRED_HALF_LIFE
from retrieval.ranking import RankingOptions, rank
from retrieval.store import Hit, Mode, PostStore, StoreQuery
from retrieval.threads import attach_parents

log = logging.getLogger(__name__)

MAX_QUERY_BYTES = 10_000
# Feeds go back to 2000 at the earliest (see retrieval.post.EARLIEST_POST); a window or
# half-life longer than this is a typo, not a question.
MAX_WINDOW = timedelta(days=365 * 30)
MIN_HALF_LIFE = timedelta(seconds=1)
_MODES: tuple[Mode, ...] = ("hybrid", "dense", "sparse")
# Re-ranking needs candidates beyond k: diversity drops duplicates and capped authors.
OVERFETCH = 3
MIN_RERANK_POOL = 30
WIDEN_FACTORS = (4, 24)
EVENT_CANDIDATES = 20
FUTURE_SLACK = timedelta(days=1)
# Chosen on the dev set's tune part (retrieval/devset/README.md).
LOW_CONFIDENCE_BELOW = 0.35


class BadSearch(ValueError):
    """A search the user must fix; the message says what is wrong, in plain words."""


@dataclass(frozen=True)
class SearchOptions:
    """Which pipeline stages run. Defaults are the product's (chosen by the evaluation)."""

    understand: bool = True
    diversity: DiversityOptions | None = field(default_factory=DiversityOptions)
    threads: bool = True
    # Engagement boost weight; 0 = off. The dev set did not support a boost (README).
    engagement_weight: float = 0.0
    # HNSW beam width for the dense search. 256 measured at 100k posts: recall@10 vs exact
    # 0.86 (default 0.69) for ~0.6 ms more per query (bench/retrieval.py, README).
    hnsw_ef: int | None = 256
    # Fusion and recency over the candidates (retrieval.ranking).
    ranking: RankingOptions = field(default_factory=RankingOptions)
    # Candidates taken from each of the dense and BM25 searches before ranking.
    candidates: int = 100
    # A best dense match below this cosine marks the result low-confidence: the feed likely
    # has nothing on the question (chosen on the dev set's tune part, README).
    low_confidence_below: float = LOW_CONFIDENCE_BELOW


@dataclass(frozen=True)
class SearchResult:
    """What `Searcher.find` found and how it read the query.

    `since`/`until` are the window actually searched (after any widening); `notes` are
    sentences for a person ("Nothing in the last 1:00:00; widened to the last 4:00:00.").
    """

    hits: list[Hit]
    parsed: ParsedQuery
    since: datetime | None
    until: datetime | None
    half_life: timedelta | None
    widened: bool = False
    notes: tuple[str, ...] = ()
    # The best dense cosine among the candidates (None in keyword-only mode), and whether it
    # is too low to trust that the feed has anything on the question.
    confidence: float | None = None
    low_confidence: bool = False


@dataclass(frozen=True)
class _Recency:
    now: datetime
    half_life: timedelta | None
    cap: timedelta | None


def _span_words(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{int(seconds)} seconds"


class Searcher:
    """Search posts in `store` with queries embedded by `embedder` (the one that filled it).

    `options` are the defaults for every call; `find`/`search` take per-call overrides.
    """

    def __init__(
        self, store: PostStore, embedder: Embedder, options: SearchOptions | None = None
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.options = options or SearchOptions()
        if self.options.hnsw_ef is not None and not 1 <= self.options.hnsw_ef <= MAX_HNSW_EF:
            raise ValueError(f"hnsw_ef must be between 1 and {MAX_HNSW_EF}")

    def search(
        self,
        text: str,
        k: int = 10,
        since: timedelta | None = None,
        as_of: datetime | None = None,
        half_life: timedelta | None = None,
        mode: Mode = "hybrid",
        *,
        authors: Sequence[str] = (),
        hashtags: Sequence[str] = (),
        langs: Sequence[str] = (),
        options: SearchOptions | None = None,
        widen: bool = False,
        zone: tzinfo | None = None,
    ) -> list[Hit]:
        """The best `k` posts for `text`, best first (at most `k`; fewer when fewer match).

        `since` keeps posts no older than that before `as_of` (default: now); posts after
        `as_of` are never returned. `half_life` fixes how fast recency fades (default: the
        ranking options choose it from the query's best matches); time words in the text
        ("right now", "this week") prefer recent posts without dropping older ones. Unlike
        `find`, the window is not widened unless `widen` is set (a bare hit list cannot say
        it was).
        Raises `BadSearch` for unusable input.
        """
        return self.find(
            text,
            k,
            since,
            as_of,
            half_life,
            mode,
            authors=authors,
            hashtags=hashtags,
            langs=langs,
            options=options,
            widen=widen,
            zone=zone,
        ).hits

    def find(
        self,
        text: str,
        k: int = 10,
        since: timedelta | None = None,
        as_of: datetime | None = None,
        half_life: timedelta | None = None,
        mode: Mode = "hybrid",
        *,
        authors: Sequence[str] = (),
        hashtags: Sequence[str] = (),
        langs: Sequence[str] = (),
        options: SearchOptions | None = None,
        widen: bool = True,
        zone: tzinfo | None = None,
    ) -> SearchResult:
        """Run the whole pipeline (module doc) and say how the query was read.

        Explicit `since`/`authors`/`hashtags`/`langs` combine with the text's operators (the
        narrower window wins; filters add up). An explicit `half_life` fixes the recency
        half-life; without one the ranking options choose it (adaptive by default). `zone` is
        the asker's time zone for time words. With `widen`, an empty answer in an explicit
        window is retried in wider ones and `notes` says so. Raises `BadSearch` for unusable
        input.
        """
        started = time.perf_counter()
        opts = options or self.options
        query, as_of = _check(text, k, mode, as_of)
        _check_spans(since, half_life)
        now = as_of or datetime.now(UTC)
        parsed = self._parse(query, text, now, zone, opts)
        notes: list[str] = []
        start = now - since if since is not None else None
        if parsed.since is not None:
            start = parsed.since if start is None else max(start, parsed.since)
        end = as_of
        if parsed.until is not None:
            end = parsed.until if end is None else min(end, parsed.until)
        if start is not None and end is not None and start >= end:
            raise BadSearch("the window is empty: its start is not before its end")
        cap = parsed.half_life
        if parsed.event is not None:
            began = event_start(parsed.event, now, self._event_search)
            if began is None:
                notes.append(f"Could not tell when {parsed.event!r} began.")
            else:
                since_event = max(now - began, MIN_PREFERRED_HALF_LIFE)
                cap = since_event if cap is None else min(cap, since_event)
                notes.append(f"{parsed.event!r} began at about {began:%Y-%m-%d %H:%M} UTC.")
        request = StoreQuery(
            text=parsed.text,
            dense=self._embed(parsed.text, mode),
            limit=min(MAX_LIMIT, max(opts.candidates, OVERFETCH * k)),
            mode=mode,
            as_of=end,
            since=start,
            authors=tuple(authors) + parsed.authors,
            hashtags=tuple(hashtags) + parsed.hashtags,
            langs=tuple(langs) + parsed.langs,
            hnsw_ef=opts.hnsw_ef,
        )
        recency = _Recency(now=end or now, half_life=half_life, cap=cap)
        hits, applied, best = self._rank(request, k, parsed, opts, recency)
        widened = False
        if not hits and widen and start is not None:
            span = (end or now) - start
            for wider in [span * f for f in WIDEN_FACTORS if span * f < MAX_WINDOW] + [None]:
                request = replace(request, since=None if wider is None else (end or now) - wider)
                hits, applied, best = self._rank(request, k, parsed, opts, recency)
                if hits:
                    widened = True
                    where = "any time" if wider is None else f"the last {_span_words(wider)}"
                    notes.append(f"Nothing in the last {_span_words(span)}; widened to {where}.")
                    start = request.since
                    break
            else:
                notes.append("Nothing matched, even with no time window.")
        if opts.threads and hits:
            hits = attach_parents(hits, self.store, end)
        log.info(
            "search",
            extra={
                "query_chars": len(query),
                "k": k,
                "mode": mode,
                "hits": len(hits),
                "widened": widened,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return SearchResult(
            hits=hits,
            parsed=parsed,
            since=start,
            until=end,
            half_life=applied,
            widened=widened,
            notes=tuple(notes),
            confidence=best,
            low_confidence=best is not None and best < opts.low_confidence_below,
        )

    def _parse(
        self, query: str, original: str, now: datetime, zone: tzinfo | None, opts: SearchOptions
    ) -> ParsedQuery:
        if not opts.understand:
            return ParsedQuery(text=query, original=original)
        try:
            return parse_query(query, now, zone)
        except QueryNotUnderstood as exc:
            raise BadSearch(str(exc)) from exc

    def _embed(self, text: str, mode: Mode) -> list[float]:
        # Embedding is skipped for pure keyword search; the store ignores `dense` then.
        if mode == "sparse":
            return []
        return self.embedder.embed_queries([text])[0].astype(float).tolist()

    def candidates(self, request: StoreQuery) -> tuple[list[Hit], list[Hit]]:
        """The dense and the BM25 candidates for `request` (each up to `request.limit`), the
        two lists every ranking is made from."""
        dense: list[Hit] = []
        sparse: list[Hit] = []
        if request.mode in ("hybrid", "dense"):
            dense = self.store.query(replace(request, mode="dense", half_life=None))
        if request.mode in ("hybrid", "sparse"):
            sparse = self.store.query(replace(request, mode="sparse", half_life=None))
        return dense, sparse

    def _rank(
        self,
        request: StoreQuery,
        k: int,
        parsed: ParsedQuery,
        opts: SearchOptions,
        recency: _Recency,
    ) -> tuple[list[Hit], timedelta | None, float | None]:
        dense, sparse = self.candidates(request)
        ranked = rank(
            dense,
            sparse,
            recency.now,
            opts.ranking,
            half_life=recency.half_life,
            cap=recency.cap,
        )
        best = max((h.why["dense"] for h in dense if "dense" in h.why), default=None)
        hits = ranked.hits
        if parsed.phrases:
            wanted = [p.casefold() for p in parsed.phrases]
            hits = [h for h in hits if all(w in h.post.text.casefold() for w in wanted)]
        if opts.engagement_weight > 0:
            hits = boost(hits, opts.engagement_weight)
        if opts.diversity is not None:
            # Diversity compares every pair it keeps: a few times k is plenty to fill k.
            pool = hits[: max(OVERFETCH * k, MIN_RERANK_POOL)]
            hits = diversify(pool, k, parsed.text, opts.diversity, exempt_authors=request.authors)
        return hits[:k], ranked.half_life, best

    def _event_search(self, text: str, since: datetime, as_of: datetime) -> list[Hit]:
        request = StoreQuery(
            text=text,
            dense=self._embed(text, "hybrid"),
            limit=EVENT_CANDIDATES,
            mode="hybrid",
            as_of=as_of,
            since=since,
            hnsw_ef=self.options.hnsw_ef,
        )
        return self.store.query(request)

    def request(
        self,
        text: str,
        k: int = 10,
        *,
        since: timedelta | None = None,
        as_of: datetime | None = None,
        half_life: timedelta | None = None,
        mode: Mode = "hybrid",
        authors: Sequence[str] = (),
        hashtags: Sequence[str] = (),
        langs: Sequence[str] = (),
    ) -> StoreQuery:
        """Validate and embed a plain search (no query understanding, no re-ranking) without
        running it: `store.query(request(...))` is the store-only part of the pipeline."""
        query, as_of = _check(text, k, mode, as_of)
        _check_spans(since, half_life)
        start = (as_of or datetime.now(UTC)) - since if since is not None else None
        return StoreQuery(
            text=query,
            dense=self._embed(query, mode),
            limit=k,
            mode=mode,
            as_of=as_of,
            since=start,
            half_life=half_life,
            authors=tuple(authors),
            hashtags=tuple(hashtags),
            langs=tuple(langs),
            hnsw_ef=self.options.hnsw_ef,
        )


def _check(
    text: object, k: object, mode: object, as_of: datetime | None
) -> tuple[str, datetime | None]:
    if not isinstance(text, str):
        raise BadSearch("the query must be text")
    if "\x00" in text:
        raise BadSearch("the query contains a NUL character")
    if len(text.encode("utf-8", errors="replace")) > MAX_QUERY_BYTES:
        raise BadSearch(f"the query is longer than {MAX_QUERY_BYTES // 1000} kB")
    # Control characters (escape sequences pasted from a terminal) are noise, not words.
    query = clean_text(text).strip()
    if not query:
        raise BadSearch("the query is empty")
    if mode not in _MODES:
        raise BadSearch(f"unknown mode {mode!r}; use one of {', '.join(_MODES)}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_LIMIT:
        raise BadSearch(f"k must be a whole number from 1 to {MAX_LIMIT}")
    if as_of is not None:
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        if not datetime(2000, 1, 1, tzinfo=UTC) <= as_of <= datetime(2200, 1, 1, tzinfo=UTC):
            raise BadSearch(f"as_of {as_of.isoformat()} is not a plausible date")
        # A replay clock looks back; a `now` ahead of the real one is a typo (2205 for 2025).
        if as_of > datetime.now(UTC) + FUTURE_SLACK:
            raise BadSearch(f"now {as_of:%Y-%m-%d %H:%M} UTC is in the future")
    return query, as_of


def check_request(
    text: object,
    k: object = 10,
    since: timedelta | None = None,
    as_of: datetime | None = None,
    half_life: timedelta | None = None,
) -> None:
    """Raise `BadSearch` for a request `Searcher.find` would refuse, with neither a store nor a
    model: a command checks what it was given before it loads either."""
    query, as_of = _check(text, k, "hybrid", as_of)
    _check_spans(since, half_life)
    try:
        parse_query(query, as_of or datetime.now(UTC))
    except QueryNotUnderstood as exc:
        raise BadSearch(str(exc)) from exc


def _check_spans(since: timedelta | None, half_life: timedelta | None) -> None:
    if since is not None:
        if since <= timedelta(0):
            raise BadSearch("since must be a positive duration (how far back to look)")
        if since > MAX_WINDOW:
            raise BadSearch("since is longer than 30 years")
    if half_life is not None:
        if half_life < MIN_HALF_LIFE:
            raise BadSearch("half_life must be at least one second")
        if half_life > MAX_WINDOW:
            raise BadSearch("half_life is longer than 30 years")
