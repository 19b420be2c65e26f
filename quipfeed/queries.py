"""Read-only commands (stats, search, dead letters): ask the running daemon when one owns
the store, else open the store and the bus here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

from ingest.bus import Bus
from ingest.http_api import hit_json
from ingest.stats import collect_stats
from quipfeed.runtime import DaemonFile, embedder_for, open_bus, open_store, redis_url
from quipfeed.settings import Settings
from retrieval.search import Searcher
from retrieval.store import PostStore

T = TypeVar("T")


class SearchRefused(Exception):
    """The daemon refused the query (bad input); the message says why."""


def _ask_daemon(settings: Settings, path: str, params: dict[str, Any] | None = None) -> Any | None:
    url = DaemonFile(settings).live_url()
    if url is None:
        return None
    response = httpx.get(f"{url}{path}", params=params, timeout=60.0)
    if response.status_code == 422:
        detail = response.json().get("detail")
        raise SearchRefused(detail if isinstance(detail, str) else str(detail))
    response.raise_for_status()
    return response.json()


def _with_store(settings: Settings, dim: int, work: Callable[[Bus, PostStore], Awaitable[T]]) -> T:
    store = open_store(settings, dim)
    try:
        with redis_url(settings) as url:

            async def go() -> T:
                bus = open_bus(settings, url)
                try:
                    return await work(bus, store)
                finally:
                    await bus.client.aclose()

            return asyncio.run(go())
    finally:
        store.close()


def stats(settings: Settings) -> dict[str, Any]:
    remote = _ask_daemon(settings, "/stats")
    if remote is not None:
        return dict(remote)
    # The store is opened with the embedder's width; a store already created keeps its own.
    return _with_store(settings, embedder_for(settings).dim, collect_stats)


def dead_letters(settings: Settings, limit: int) -> list[dict[str, Any]]:
    remote = _ask_daemon(settings, "/dead-letters", {"limit": limit})
    if remote is not None:
        return list(remote)
    with redis_url(settings) as url:

        async def go() -> list[dict[str, Any]]:
            bus = open_bus(settings, url)
            try:
                return [d.__dict__ for d in await bus.dead_letters(limit)]
            finally:
                await bus.client.aclose()

        return asyncio.run(go())


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
    """Hits as JSON; how the query was read (a widened window …) is appended to `notes`."""
    params: dict[str, Any] = {"q": query, "k": k, "widen": True}
    if since:
        params["since_s"] = since.total_seconds()
    if as_of:
        params["now"] = as_of.isoformat()
    if half_life:
        params["half_life_s"] = half_life.total_seconds()
    url = DaemonFile(settings).live_url()
    if url is not None:
        response = httpx.get(f"{url}/search", params=params, timeout=60.0)
        if response.status_code == 422:
            detail = response.json().get("detail")
            raise SearchRefused(detail if isinstance(detail, str) else str(detail))
        response.raise_for_status()
        if notes is not None:
            notes.extend(json.loads(response.headers.get("X-Quipfeed-Notes", "[]")))
        return list(response.json())
    embedder = embedder_for(settings)
    store = open_store(settings, embedder.dim)
    try:
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

    from ingest.daemon import trend_prefix
    from retrieval.trending import TrendCounter

    with redis_url(settings) as url:

        async def go() -> list[dict[str, Any]]:
            bus = open_bus(settings, url)
            try:
                counter = TrendCounter(bus.client, trend_prefix(settings.redis.stream))
                return [asdict(t) for t in await counter.trending(window, as_of, limit=limit)]
            finally:
                await bus.client.aclose()

        return asyncio.run(go())
