"""The retrieval seam: what a turn needs from search, whoever serves it.

The composition root passes either `LocalSearch` (this process owns the store) or a client of
the running ingest daemon (`quipfeed.remote_search.RemoteSearch`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Protocol

from retrieval.search import Searcher
from retrieval.store import Hit, StoreUnavailable


class SearchUnavailable(RuntimeError):
    """Search could not run (daemon down, store closed); the message says what to do."""


class PostSearch(Protocol):
    async def search(
        self, text: str, *, k: int, since: timedelta | None, as_of: datetime | None
    ) -> list[Hit]:
        """The best `k` posts for `text`, best first; posts after `as_of` never. Raises
        `SearchUnavailable` when search cannot run; a query the store rejects gives []."""
        ...


class LocalSearch:
    """`PostSearch` over an in-process `Searcher` (run in a thread: embedding is CPU work).
    A store that cannot be reached (`StoreUnavailable`) raises `SearchUnavailable`."""

    def __init__(self, searcher: Searcher, *, half_life: timedelta | None = None) -> None:
        self.searcher = searcher
        self.half_life = half_life

    async def search(
        self, text: str, *, k: int, since: timedelta | None, as_of: datetime | None
    ) -> list[Hit]:
        try:
            return await asyncio.to_thread(
                self.searcher.search, text, k, since, as_of, self.half_life
            )
        except ValueError:  # BadSearch: an empty or over-long query finds nothing
            return []
        except StoreUnavailable as e:
            raise SearchUnavailable(str(e)) from e
