"""ServerStore through qdrant-client's local mode (no Qdrant server runs here), compared with
EdgeStore on the same posts and vectors: both must return the same posts in the same order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.plan import Fusion
from retrieval.server_store import ServerStore
from retrieval.store import Mode, StoreQuery, StoreUnavailable
from tests.retrieval.builders import T0, make_post

# Distinct lengths on purpose: BM25 gives equal scores to equal-length posts with the same
# terms, and equal scores may come back in either order from either backend.
TEXTS = [
    "Flooding closes the bridge",
    "River levels keep rising after the long storm",
    "Volunteers fill sandbags near the river all night long today",
    "Evacuation ordered",
    "The storm knocked out power to thousands of homes",
    "Schools closed tomorrow because of the flood, parents should check the website",
    "New coffee shop opened on Main Street across from the old library and bakery",
    "Great game last night",
    "Road closures: avoid the bridge and the river road near the dam and the park entrance",
    "Donate to the flood relief fund",
    "Power is back in most neighbourhoods after the outage this morning in town",
    "Shelter open at the high school gym with cots and food and water for anyone displaced now",
]


@pytest.fixture
def both(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[EdgeStore, ServerStore]]:
    posts = [
        make_post(
            f"p{i}",
            t,
            hours=i * 3,
            author=f"user{i % 3}.bsky.social",
            source="jetstream" if i % 2 else "mastodon",
            hashtags=["flood"] if i % 4 == 0 else [],
        )
        for i, t in enumerate(TEXTS)
    ]
    vectors = embedder.embed(TEXTS).tolist()
    edge = EdgeStore(tmp_path / "edge", embedder.dim)
    server = ServerStore(":memory:", None, "posts", embedder.dim)
    edge.upsert(posts, vectors)
    server.upsert(posts, vectors)
    yield edge, server
    edge.close()
    server.close()


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize("half_life", [None, timedelta(hours=6)])
def test_both_backends_return_the_same_posts_in_the_same_order(
    both: tuple[EdgeStore, ServerStore],
    embedder: Embedder,
    fusion: Fusion,
    mode: Mode,
    half_life: timedelta | None,
) -> None:
    edge, server = both
    edge.fusion = server.fusion = fusion
    for text in ["flood river bridge", "power outage", "where can I help"]:
        request = StoreQuery(
            text=text,
            dense=embedder.embed([text])[0].tolist(),
            mode=mode,
            limit=5,
            as_of=T0 + timedelta(hours=30),
            half_life=half_life,
        )
        a, b = edge.query(request), server.query(request)
        assert [h.post.id for h in a] == [h.post.id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-3)


def test_both_backends_filter_and_summarise_alike(
    both: tuple[EdgeStore, ServerStore], embedder: Embedder
) -> None:
    edge, server = both
    request = StoreQuery(
        text="flood",
        dense=embedder.embed(["flood"])[0].tolist(),
        authors=["user0.bsky.social"],
        hashtags=["flood"],
    )
    assert [h.post.id for h in edge.query(request)] == [h.post.id for h in server.query(request)]
    assert edge.summary() == server.summary()


def test_server_store_deletes_like_the_edge_store(
    both: tuple[EdgeStore, ServerStore],
) -> None:
    edge, server = both
    for s in (edge, server):
        s.delete(["p0"])
        s.delete_where(created_before=T0 + timedelta(hours=7))
    assert edge.count() == server.count() == len(TEXTS) - 3
    assert [p.id for p in server.get(["p1", "p3", "p4"])] == ["p3", "p4"]


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_an_unreachable_server_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="cannot use Qdrant"):
        ServerStore("http://127.0.0.1:9", None, "posts", 8, timeout=1)


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_both_backends_accept_an_hnsw_beam_width_and_agree(
    both: tuple[EdgeStore, ServerStore], embedder: Embedder, mode: Mode
) -> None:
    edge, server = both
    vector = embedder.embed(["flood relief"])[0].tolist()
    for half_life in (None, timedelta(hours=24)):
        request = StoreQuery(
            "flood relief", vector, limit=5, mode=mode, half_life=half_life, hnsw_ef=64
        )
        assert [h.post.id for h in edge.query(request)] == [
            h.post.id for h in server.query(request)
        ]
