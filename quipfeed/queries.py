"""Read-only commands (stats, search, trending, dead letters): ask the running daemon when one
owns the store, else open the store and the bus here.

None of them loads a model to read: the store opens with the vector width it was created
with, and only `search` over a store opened here loads the embedder (after checking the
query). Imports are inside the functions, so each command pays only for what it uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from quipfeed.runtime import DaemonFile, open_bus, open_store, redis_url, stored_dim

if TYPE_CHECKING:
    from ingest.bus import Bus
    from quipfeed.settings import Settings
    from retrieval.store import StoreSummary

T = TypeVar("T")


class SearchRefused(Exception):
    """The daemon refused the query (bad input); the message says why."""


class _NothingStored:
    """The store before anything was ingested: no shard or collection exists, and reading
    must not create one."""

    def summary(self) -> StoreSummary:
        from retrieval.store import StoreSummary

        return StoreSummary(total=0, by_source={}, oldest=None, newest=None)

    def close(self) -> None:
        return None


def _ask_daemon(settings: Settings, path: str, params: dict[str, Any] | None = None) -> Any | None:
    url = DaemonFile(settings).live_url()
    if url is None:
        return None
    import httpx

    response = httpx.get(f"{url}{path}", params=params, timeout=60.0)
    if response.status_code == 422:
        detail = response.json().get("detail")
        raise SearchRefused(detail if isinstance(detail, str) else str(detail))
    response.raise_for_status()
    return response.json()


def _with_bus(settings: Settings, work: Callable[[Bus], Awaitable[T]]) -> T:
    with redis_url(settings) as url:

        async def go() -> T:
            bus = open_bus(settings, url)
            try:
                return await work(bus)
            finally:
                await bus.client.aclose()

        return asyncio.run(go())


def stats(settings: Settings) -> dict[str, Any]:
    from ingest.stats import collect_stats

    remote = _ask_daemon(settings, "/stats")
    if remote is not None:
        return dict(remote)
    dim = stored_dim(settings)
    store: Any = _NothingStored() if dim is None else open_store(settings, dim)
    try:
        return _with_bus(settings, lambda bus: collect_stats(bus, store))
    finally:
        store.close()


def dead_letters(settings: Settings, limit: int) -> list[dict[str, Any]]:
    remote = _ask_daemon(settings, "/dead-letters", {"limit": limit})
    if remote is not None:
        return list(remote)

    async def fetch(bus: Bus) -> list[dict[str, Any]]:
        return [d.__dict__ for d in await bus.dead_letters(limit)]

    return _with_bus(settings, fetch)


def search(
    settings: Settings,
    query: str,
    *,
    k: int,
    since: timedelta | None,
    as_of: datetime | None,
    half_life: timedelta | None = None,
    notes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Hits as JSON; how the query was read (a widened window …) is appended to `notes`.
    Raises `retrieval.search.BadSearch` (a ValueError) for a query it would refuse, before
    anything loads."""
    from retrieval.search import check_request

    check_request(query, k, since, as_of, half_life)
    params: dict[str, Any] = {"q": query, "k": k, "widen": True}
    if since:
        params["since_s"] = since.total_seconds()
    if as_of:
        params["now"] = as_of.isoformat()
    if half_life:
        params["half_life_s"] = half_life.total_seconds()
    url = DaemonFile(settings).live_url()
    if url is not None:
        import httpx

        response = httpx.get(f"{url}/search", params=params, timeout=60.0)
        if response.status_code == 422:
            detail = response.json().get("detail")
            raise SearchRefused(detail if isinstance(detail, str) else str(detail))
        response.raise_for_status()
        if notes is not None:
            notes.extend(json.loads(response.headers.get("X-Quipfeed-Notes", "[]")))
        return list(response.json())
    return _search_here(settings, query, k, since, as_of, half_life, notes)


def _search_here(
    settings: Settings,
    query: str,
    k: int,
    since: timedelta | None,
    as_of: datetime | None,
    half_life: timedelta | None,
    notes: list[str] | None,
) -> list[dict[str, Any]]:
    from quipfeed.runtime import query_embedder_for
    from retrieval.search import Searcher
    from retrieval.store import hit_json

    dim = stored_dim(settings)
    if dim is None:
        if notes is not None:
            notes.append("nothing is indexed yet: run `quipfeed ingest` first")
        return []
    # The store first: a shard held by another process fails before the model loads.
    store = open_store(settings, dim)
    try:
        embedder = query_embedder_for(settings)
        if embedder.dim != dim:
            from retrieval.store import StoreUnavailable

            raise StoreUnavailable(
                f"the store holds {dim}-dim vectors but the embedder makes {embedder.dim}; "
                "search with the embedder that filled it"
            )
        result = Searcher(store, embedder).find(query, k, since, as_of, half_life, widen=True)
    finally:
        store.close()
    if notes is not None:
        notes.extend(result.notes)
    return [hit_json(h) for h in result.hits]


def trending(
    settings: Settings, window: timedelta, as_of: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """Trending topics from the counters the indexers keep in Redis (no store needed)."""
    from dataclasses import asdict

    from ingest.bus import trend_prefix
    from retrieval.trending import TrendCounter

    async def fetch(bus: Bus) -> list[dict[str, Any]]:
        counter = TrendCounter(bus.client, trend_prefix(settings.redis.stream))
        return [asdict(t) for t in await counter.trending(window, as_of, limit=limit)]

    return _with_bus(settings, fetch)
