"""The `PostSearch` every chat surface gets: the running ingest daemon's search, else the store
opened in this process, found again after an outage.

A chat keeps answering while the store is away (the shard held by another process, a Qdrant
server down, the daemon stopped): a search that cannot reach it raises `SearchUnavailable`, the
turn answers without the feed and says so, and the next search looks for the store again, so
answers have fresh posts behind them as soon as it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.search import LocalSearch, PostSearch, SearchUnavailable
from quipfeed.runtime import DaemonFile, embedder_for, open_store
from quipfeed.settings import Settings
from retrieval.embedder import Embedder
from retrieval.search import Searcher
from retrieval.store import Hit, StoreUnavailable


class ReopeningSearch:
    """`PostSearch` over whichever of the daemon or the store can be reached now.

    `connect()` finds it (raising `SearchUnavailable` when neither can be reached); `search`
    connects first when needed, and forgets a connection that fails so the next call looks
    afresh. `embedder` (default: the settings' one, loaded on first need) embeds queries for a
    store opened here."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        half_life: timedelta | None = None,
    ) -> None:
        self.settings = settings
        self.half_life = half_life
        self._embedder = embedder
        self._current: PostSearch | None = None
        self._close: Callable[[], Awaitable[None]] | None = None
        self._connecting = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._current is not None

    async def connect(self) -> PostSearch:
        async with self._connecting:
            if self._current is None:
                self._current, self._close = await self._find()
            return self._current

    async def search(
        self, text: str, *, k: int, since: timedelta | None, as_of: datetime | None
    ) -> list[Hit]:
        current = await self.connect()
        try:
            return await current.search(text, k=k, since=since, as_of=as_of)
        except SearchUnavailable:
            await self._forget(current)
            raise

    async def aclose(self) -> None:
        if self._current is not None:
            await self._forget(self._current)

    async def _find(self) -> tuple[PostSearch, Callable[[], Awaitable[None]]]:
        # While `quipfeed ingest` runs it owns the embedded shard: ask it over HTTP.
        url = await asyncio.to_thread(DaemonFile(self.settings).live_url)
        if url is not None:
            from quipfeed.remote_search import RemoteSearch

            remote = RemoteSearch(url)
            return remote, remote.aclose
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(embedder_for, self.settings)
        try:
            store = await asyncio.to_thread(open_store, self.settings, self._embedder.dim)
        except StoreUnavailable as e:
            raise SearchUnavailable(str(e)) from e

        async def close() -> None:
            await asyncio.to_thread(store.close)

        return LocalSearch(Searcher(store, self._embedder), half_life=self.half_life), close

    async def _forget(self, current: PostSearch) -> None:
        async with self._connecting:
            if self._current is not current:
                return  # another caller already forgot (or replaced) it
            close, self._current, self._close = self._close, None, None
        if close is not None:
            with contextlib.suppress(Exception):  # it is unreachable already; closing is tidy-up
                await close()
