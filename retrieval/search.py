"""Text in, ranked posts out: validates a search, embeds the query, asks the store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from retrieval.embedder import Embedder
from retrieval.plan import MAX_LIMIT
from retrieval.store import Hit, Mode, PostStore, StoreQuery

MAX_QUERY_BYTES = 10_000
# Feeds go back to 2000 at the earliest (see retrieval.post.EARLIEST_POST); a window or
# half-life longer than this is a typo, not a question.
MAX_WINDOW = timedelta(days=365 * 30)
MIN_HALF_LIFE = timedelta(seconds=1)
_MODES: tuple[Mode, ...] = ("hybrid", "dense", "sparse")


class BadSearch(ValueError):
    """A search the user must fix; the message says what is wrong, in plain words."""


class Searcher:
    """Search posts in `store` with queries embedded by `embedder` (the one that filled it)."""

    def __init__(self, store: PostStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

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
    ) -> list[Hit]:
        """The best `k` posts for `text`, best first.

        `since` keeps posts no older than that before `as_of` (default: now); posts after
        `as_of` are never returned. `half_life` ranks recent posts higher (a post one
        half-life from `as_of` counts half). Raises `BadSearch` for unusable input.
        """
        request = self.request(
            text,
            k,
            since=since,
            as_of=as_of,
            half_life=half_life,
            mode=mode,
            authors=authors,
            hashtags=hashtags,
            langs=langs,
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
        """Validate and embed a search without running it (`search` = `store.query(request)`)."""
        if not isinstance(text, str):
            raise BadSearch("the query must be text")
        query = text.strip()
        if not query:
            raise BadSearch("the query is empty")
        if len(query.encode("utf-8", errors="replace")) > MAX_QUERY_BYTES:
            raise BadSearch(f"the query is longer than {MAX_QUERY_BYTES // 1000} kB")
        if "\x00" in query:
            raise BadSearch("the query contains a NUL character")
        if mode not in _MODES:
            raise BadSearch(f"unknown mode {mode!r}; use one of {', '.join(_MODES)}")
        if not isinstance(k, int) or not 1 <= k <= MAX_LIMIT:
            raise BadSearch(f"k must be a whole number from 1 to {MAX_LIMIT}")
        if as_of is not None:
            if as_of.tzinfo is None:
                as_of = as_of.replace(tzinfo=UTC)
            if not datetime(2000, 1, 1, tzinfo=UTC) <= as_of <= datetime(2200, 1, 1, tzinfo=UTC):
                raise BadSearch(f"as_of {as_of.isoformat()} is not a plausible date")
        start: datetime | None = None
        if since is not None:
            if since <= timedelta(0):
                raise BadSearch("since must be a positive duration (how far back to look)")
            if since > MAX_WINDOW:
                raise BadSearch("since is longer than 30 years")
            start = (as_of or datetime.now(UTC)) - since
        if half_life is not None:
            if half_life < MIN_HALF_LIFE:
                raise BadSearch("half_life must be at least one second")
            if half_life > MAX_WINDOW:
                raise BadSearch("half_life is longer than 30 years")
        # Embedding is skipped for pure keyword search; the store ignores `dense` then.
        dense = [] if mode == "sparse" else self.embedder.embed([query])[0].astype(float).tolist()
        return StoreQuery(
            text=query,
            dense=dense,
            limit=k,
            mode=mode,
            as_of=as_of,
            since=start,
            half_life=half_life,
            authors=tuple(authors),
            hashtags=tuple(hashtags),
            langs=tuple(langs),
        )
