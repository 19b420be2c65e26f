"""The seam between quipfeed and its vector database.

Two backends implement `PostStore` with the same schema and query code: Qdrant Edge
in-process (the embedded default; one process owns the shard) and a Qdrant server or
cluster by URL. Calls are synchronous; async callers run them in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from retrieval.post import Post

Mode = Literal["hybrid", "dense", "sparse"]


@dataclass(frozen=True)
class StoreQuery:
    """One retrieval request as the store sees it (the query text is already embedded)."""

    text: str
    dense: Sequence[float]
    limit: int = 10
    mode: Mode = "hybrid"
    # Posts created after `as_of` do not exist yet (replays of old data behave as if live).
    as_of: datetime | None = None
    since: datetime | None = None
    # Exponential recency decay on created_at around `as_of`; None disables it.
    half_life: timedelta | None = None
    authors: Sequence[str] = ()
    hashtags: Sequence[str] = ()
    langs: Sequence[str] = ()
    # HNSW beam width for the dense search; None: the store's default. Larger: slower, closer
    # to exact.
    hnsw_ef: int | None = None


@dataclass(frozen=True)
class Hit:
    """A post the store found, its final score, and why it matched."""

    post: Post
    score: float
    why: dict[str, float] = field(default_factory=dict)
    # Posts this one replies to or quotes, when indexed (retrieval.threads); not ranked.
    context: tuple[Post, ...] = ()


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as JSON: what the daemon's `/search` answers and `quipfeed search --json` prints."""
    return {
        "id": hit.post.id,
        "score": hit.score,
        "why": hit.why,
        "post": hit.post.model_dump(mode="json", exclude={"raw"}, exclude_none=True),
        # The posts this one replies to or quotes (thread context), when indexed.
        "context": [
            p.model_dump(mode="json", exclude={"raw"}, exclude_none=True) for p in hit.context
        ],
    }


@dataclass(frozen=True)
class StoreSummary:
    total: int
    by_source: dict[str, int]
    oldest: datetime | None
    newest: datetime | None


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or opened (a server down, a shard owned by another process)."""


class PostStore(Protocol):
    def upsert(self, posts: Sequence[Post], dense: Sequence[Sequence[float]]) -> None:
        """Insert or replace posts. When this returns they survive this process being killed
        (kill -9); after the next `sync` they survive a power loss too."""

    def delete(self, post_ids: Sequence[str]) -> None:
        """Remove posts by their post ids; unknown ids are ignored."""

    def delete_where(
        self,
        *,
        native_id: str | None = None,
        author_id: str | None = None,
        created_before: datetime | None = None,
    ) -> None:
        """Remove every post matching all the given conditions (at least one)."""

    def sync(self) -> None:
        """Make every write so far survive a power loss or an OS crash (fsync). Callers that
        promise durability (the indexer acknowledges the bus only after it) call this."""

    def query(self, request: StoreQuery) -> list[Hit]: ...

    def get(self, post_ids: Sequence[str]) -> list[Post]:
        """The stored posts for these ids, in the order asked; missing ones are skipped."""

    def count(self) -> int: ...

    def summary(self) -> StoreSummary: ...

    def close(self) -> None: ...
