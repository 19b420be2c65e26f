"""Both stores say the vector width they were created with, and that there is none before, so
read-only commands open them without an embedding model. Qdrant Edge on disk; the Qdrant
server is the protocol-faithful fake, run as a process."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval import edge_store, server_store
from retrieval.edge_store import EdgeStore
from retrieval.server_store import ServerStore
from retrieval.store import StoreUnavailable
from tests.fakes.qdrant_server import FakeQdrant


def test_an_edge_shard_reports_the_width_it_was_created_with(tmp_path: Path) -> None:
    path = tmp_path / "posts"
    assert edge_store.stored_dim(path) is None
    EdgeStore(path, 48).close()
    assert edge_store.stored_dim(path) == 48
    # Opened at that width it reads; at another it refuses, as before.
    EdgeStore(path, 48).close()
    with pytest.raises(StoreUnavailable):
        EdgeStore(path, 32)


def test_a_server_collection_reports_its_width_and_none_before_it_exists(tmp_path: Path) -> None:
    with FakeQdrant(tmp_path / "qdrant") as server:
        assert server_store.stored_dim(server.url, None, "posts") is None
        ServerStore(server.url, None, "posts", 48).close()
        assert server_store.stored_dim(server.url, None, "posts") == 48
    with pytest.raises(StoreUnavailable):  # the server is gone
        server_store.stored_dim(server.url, None, "posts", timeout=2)
