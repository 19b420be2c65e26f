"""Text in, ranked posts out: understands the ask, embeds it, asks the store, re-ranks.

The pipeline (`Searcher.find`), each stage behind a switch in `SearchOptions` so the evaluation
can measure what it earns:

1. validate (`BadSearch` for anything unusable: empty, over 10 kB, NUL, absurd windows);
2. understand the ask (`retrieval.query_syntax`): time words → window and half-life,
   `from:`, `#tag`, `lang:`, quoted phrases → filters, "since the keynote" → when the
   feed started on it;
3. one store query (hybrid dense + BM25, RRF, recency decay), over-fetching when re-ranking;
4. quoted phrases kept only where the text has them; engagement boost (weight from evaluation);
5. diversity (`retrieval.diversity`): duplicates collapsed, per-author cap, MMR;
6. an empty answer widens the window (×4, ×24, then none) and says so in `SearchResult.notes`;
7. thread context (`retrieval.threads`): replied-to and quoted posts attached to their hits.

Each search logs one line (`search`, INFO): the query's length (never its text), k, mode, hits,
whether the window widened, and milliseconds. It carries the turn's `request_id` when the
process's log setup adds one (the composition root's `quipfeed.logs`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

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
PHRASE_POOL = 100
WIDEN_FACTORS = (4, 24)
EVENT_CANDIDATES = 20


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
    ) -> list[Hit]:
        """The best `k` posts for `text`, best first (at most `k`; fewer when fewer match).

        `since` keeps posts no older than that before `as_of` (default: now); posts after
        `as_of` are never returned. `half_life` ranks recent posts higher (a post one
        half-life from `as_of` counts half); time words in the text ("right now", "this
        week") narrow the window and shorten the half-life. Unlike `find`, the window is not
        widened unless `widen` is set (a bare hit list cannot say it was).
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
    ) -> SearchResult:
        """Run the whole pipeline (module doc) and say how the query was read.

        Explicit `since`/`authors`/`hashtags`/`langs` combine with what the text asks (the
        narrower window wins; filters add up). An explicit `half_life` is replaced by a
        shorter one the time words imply. With `widen`, an empty answer in a window is
        retried in wider ones and `notes` says so. Raises `BadSearch` for unusable input.
        """
        started = time.perf_counter()
        opts = options or self.options
        query, as_of = _check(text, k, mode, as_of)
        _check_spans(since, half_life)
        now = as_of or datetime.now(UTC)
        if opts.understand:
            try:
                parsed = parse_query(query, now)
            except QueryNotUnderstood as exc:
                raise BadSearch(str(exc)) from exc
        else:
            parsed = ParsedQuery(text=query, original=text)
        notes: list[str] = []
        start = now - since if since is not None else None
        if parsed.since is not None:
            start = parsed.since if start is None else max(start, parsed.since)
        end = as_of
        if parsed.until is not None:
            end = parsed.until if end is None else min(end, parsed.until)
        if parsed.event is not None:
            began = event_start(parsed.event, now, self._event_search)
            if began is None:
                notes.append(f"Could not tell when {parsed.event!r} began; no window applied.")
            else:
                start = began if start is None else max(start, began)
                notes.append(f"{parsed.event!r} began at about {began:%Y-%m-%d %H:%M} UTC.")
        hl = half_life
        if parsed.half_life is not None:
            hl = parsed.half_life if hl is None else min(hl, parsed.half_life)
        if start is not None and end is not None and start >= end:
            raise BadSearch("the window is empty: its start is not before its end")
        reranks = opts.diversity is not None or opts.engagement_weight > 0 or parsed.phrases
        fetch = k
        if reranks:
            fetch = min(MAX_LIMIT, max(OVERFETCH * k, MIN_RERANK_POOL))
        if parsed.phrases:
            fetch = min(MAX_LIMIT, max(fetch, PHRASE_POOL))
        dense = self._embed(parsed.text, mode)
        request = StoreQuery(
            text=parsed.text,
            dense=dense,
            limit=fetch,
            mode=mode,
            as_of=end,
            since=start,
            half_life=hl,
            authors=tuple(authors) + parsed.authors,
            hashtags=tuple(hashtags) + parsed.hashtags,
            langs=tuple(langs) + parsed.langs,
            hnsw_ef=opts.hnsw_ef,
        )
        hits = self._rank(request, k, parsed, opts)
        widened = False
        if not hits and widen and start is not None:
            span = (end or now) - start
            for wider in [span * f for f in WIDEN_FACTORS if span * f < MAX_WINDOW] + [None]:
                request = replace(request, since=None if wider is None else (end or now) - wider)
                hits = self._rank(request, k, parsed, opts)
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
            half_life=hl,
            widened=widened,
            notes=tuple(notes),
        )

    def _embed(self, text: str, mode: Mode) -> list[float]:
        # Embedding is skipped for pure keyword search; the store ignores `dense` then.
        if mode == "sparse":
            return []
        return self.embedder.embed([text])[0].astype(float).tolist()

    def _rank(
        self, request: StoreQuery, k: int, parsed: ParsedQuery, opts: SearchOptions
    ) -> list[Hit]:
        hits = self.store.query(request)
        if parsed.phrases:
            wanted = [p.casefold() for p in parsed.phrases]
            hits = [h for h in hits if all(w in h.post.text.casefold() for w in wanted)]
        if opts.engagement_weight > 0:
            hits = boost(hits, opts.engagement_weight)
        if opts.diversity is not None:
            return diversify(hits, k, parsed.text, opts.diversity, exempt_authors=request.authors)
        return hits[:k]

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
