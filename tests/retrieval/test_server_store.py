"""ServerStore compared with EdgeStore on the same posts and vectors: both must return the
same posts in the same order. No Qdrant server runs here, so ServerStore is compared with
EdgeStore in qdrant-client's local mode, and local mode with ServerStore over HTTP against the
fake server in tests/fakes/qdrant_server.py (Qdrant's REST API over local mode): those two
must agree exactly, which carries the first comparison over to the wire."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.post import Post
from retrieval.query_plan import Fusion
from retrieval.server_store import ServerStore
from retrieval.store import Mode, StoreQuery, StoreUnavailable
from tests.fakes.qdrant_server import FakeQdrant
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


def sample_posts() -> list[Post]:
    return [
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


@pytest.fixture(scope="module")
def fake_qdrant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeQdrant]:
    with FakeQdrant(tmp_path_factory.mktemp("qdrant") / "data") as server:
        yield server


def filled_server_store(url: str, embedder: Embedder) -> ServerStore:
    """A ServerStore on a fresh collection of `url`, holding the sample posts."""
    store = ServerStore(url, None, f"posts_{uuid.uuid4().hex[:12]}", embedder.dim)
    store.upsert(sample_posts(), embedder.embed(TEXTS).tolist())
    return store


@pytest.fixture
def both(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[EdgeStore, ServerStore]]:
    edge = EdgeStore(tmp_path / "edge", embedder.dim)
    edge.upsert(sample_posts(), embedder.embed(TEXTS).tolist())
    server = filled_server_store(":memory:", embedder)
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


# --- over HTTP, against the fake Qdrant server -----------------------------------------------


@pytest.fixture
def local_and_http(
    fake_qdrant: FakeQdrant, embedder: Embedder
) -> Iterator[tuple[ServerStore, ServerStore]]:
    local = filled_server_store(":memory:", embedder)
    http = filled_server_store(fake_qdrant.url, embedder)
    yield local, http
    local.close()
    http.close()


def test_over_http_the_server_store_answers_exactly_as_in_local_mode(
    local_and_http: tuple[ServerStore, ServerStore], embedder: Embedder
) -> None:
    local, http = local_and_http
    vector = embedder.embed(["flood river bridge"])[0].tolist()
    requests = [
        StoreQuery("flood river bridge", vector, limit=5, mode=mode, half_life=half_life)
        for mode in ("dense", "sparse", "hybrid")
        for half_life in (None, timedelta(hours=6))
    ] + [
        StoreQuery(
            "flood river bridge",
            vector,
            as_of=T0 + timedelta(hours=20),
            since=T0 + timedelta(hours=2),
            authors=["user0.bsky.social", "user1.bsky.social"],
        ),
        StoreQuery("flood", vector, hashtags=["flood"], hnsw_ef=32),
    ]
    for fusion in ("rrf", "dbsf"):
        local.fusion = http.fusion = fusion
        for request in requests:
            a, b = local.query(request), http.query(request)
            assert a, request
            assert [(h.post, h.score, h.why) for h in a] == [(h.post, h.score, h.why) for h in b]
    assert local.summary() == http.summary()
    ids = ["p3", "nope", "p0", "p7"]
    assert local.get(ids) == http.get(ids)
    for store in (local, http):
        store.delete(["p5", "nope"])
        store.delete_where(author_id="nobody")
        store.delete_where(created_before=T0 + timedelta(hours=4))
    assert local.count() == http.count() == len(TEXTS) - 3
    assert local.summary() == http.summary()


def test_a_collection_reopened_over_http_keeps_its_posts_and_checks_its_size(
    local_and_http: tuple[ServerStore, ServerStore], fake_qdrant: FakeQdrant, embedder: Embedder
) -> None:
    _, http = local_and_http
    again = ServerStore(fake_qdrant.url, None, http.collection, embedder.dim)
    assert again.count() == len(TEXTS)
    again.close()
    with pytest.raises(StoreUnavailable, match="holds 384-dim vectors"):
        ServerStore(fake_qdrant.url, None, http.collection, 8)


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_a_server_with_an_api_key_admits_only_that_key(tmp_path: Path) -> None:
    with FakeQdrant(tmp_path / "data", api_key="s3cret") as server:
        ServerStore(server.url, "s3cret", "posts", 8).close()
        for wrong in ("guess", None):
            with pytest.raises(StoreUnavailable, match="401"):
                ServerStore(server.url, wrong, "posts", 8)


def test_a_killed_server_is_unavailable_then_serves_the_same_posts_once_restarted(
    tmp_path: Path, embedder: Embedder
) -> None:
    with FakeQdrant(tmp_path / "data") as server:
        store = filled_server_store(server.url, embedder)
        post = sample_posts()[0]
        vector = embedder.embed([post.text]).tolist()
        server.kill()
        calls = {
            "upsert": lambda: store.upsert([post], vector),
            "delete": lambda: store.delete([post.id]),
            "query": lambda: store.query(StoreQuery(post.text, vector[0])),
            "get": lambda: store.get([post.id]),
            "summary": store.summary,
        }
        for name, call in calls.items():
            with pytest.raises(StoreUnavailable, match="Connection refused"):
                call()
            print(f"{name}: StoreUnavailable")
        server.start()
        assert store.count() == len(TEXTS)
        assert [h.post.id for h in store.query(StoreQuery(post.text, vector[0], limit=1))] == [
            post.id
        ]
        store.close()
