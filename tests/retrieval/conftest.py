"""Real parts for retrieval tests: the MiniLM model (loaded once) and fresh Edge shards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder, open_embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return open_embedder("sentence-transformers")


@pytest.fixture
def store(tmp_path: Path, embedder: Embedder) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "shard", embedder.dim)
    yield s
    s.close()
