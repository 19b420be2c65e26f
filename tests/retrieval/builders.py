"""Small post builders shared by the retrieval tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from retrieval.embedder import Embedder
from retrieval.post import Post

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_post(pid: str, text: str, hours: float = 0, **fields: Any) -> Post:
    return Post(id=pid, text=text, created_at=T0 + timedelta(hours=hours), **fields)


def add(store: Any, embedder: Embedder, posts: list[Post]) -> None:
    store.upsert(posts, embedder.embed([p.text for p in posts]).tolist())
