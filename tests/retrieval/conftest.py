"""Real parts for retrieval tests: the MiniLM model (loaded once) and fresh Edge shards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder, open_embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# As quipfeed.cli does before any model library loads: transformers reads these once, at import,
# and later tests in the same process (the CLI's --json output) must not get progress bars.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return open_embedder("sentence-transformers")


@pytest.fixture
def store(tmp_path: Path, embedder: Embedder) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "shard", embedder.dim)
    yield s
    s.close()
