"""EdgeStore on a real Qdrant Edge shard with real MiniLM vectors."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.query_plan import RECENCY_FLOOR
from retrieval.store import Mode, StoreQuery, StoreUnavailable
from tests.retrieval.builders import T0, add, make_post


def ask(
    store: EdgeStore, embedder: Embedder, text: str, mode: Mode = "hybrid", **kw: object
) -> list[str]:
    dense = embedder.embed([text])[0].tolist()
    hits = store.query(StoreQuery(text=text, dense=dense, mode=mode, **kw))  # type: ignore[arg-type]
    return [h.post.id for h in hits]


def test_upserting_the_same_post_twice_keeps_one_point(
    store: EdgeStore, embedder: Embedder
) -> None:
    post = make_post("at://a/1", "first version of the text")
    add(store, embedder, [post])
    add(store, embedder, [post.model_copy(update={"text": "edited text"})])
    assert store.count() == 1
    assert [p.text for p in store.get(["at://a/1"])] == ["edited text"]


def test_delete_removes_posts_and_ignores_unknown_ids(store: EdgeStore, embedder: Embedder) -> None:
    add(store, embedder, [make_post("a", "one"), make_post("b", "two"), make_post("c", "three")])
    store.delete(["a", "never-stored"])
    assert store.count() == 2
    assert [p.id for p in store.get(["a", "b", "c"])] == ["b", "c"]


def test_delete_where_matches_native_id_author_and_age(
    store: EdgeStore, embedder: Embedder
) -> None:
    add(
        store,
        embedder,
        [
            make_post("a", "one", native_id="n-1", author_id="did:x"),
            make_post("b", "two", hours=1, author_id="did:y"),
            make_post("c", "three", hours=2, author_id="did:y"),
            make_post("d", "four", hours=50, author_id="did:z"),
        ],
    )
    store.delete_where(native_id="n-1")
    assert [p.id for p in store.get(["a", "b", "c", "d"])] == ["b", "c", "d"]
    store.delete_where(author_id="did:y", created_before=T0 + timedelta(hours=1, minutes=30))
    assert [p.id for p in store.get(["b", "c", "d"])] == ["c", "d"]
    store.delete_where(created_before=T0 + timedelta(hours=10))
    assert [p.id for p in store.get(["c", "d"])] == ["d"]


def test_delete_where_without_a_condition_is_refused(store: EdgeStore) -> None:
    with pytest.raises(ValueError, match="at least one condition"):
        store.delete_where()


def test_posts_after_as_of_are_invisible(store: EdgeStore, embedder: Embedder) -> None:
    add(
        store,
        embedder,
        [
            make_post("past", "the river is flooding the town", hours=0),
            make_post("future", "the river is flooding the town again", hours=48),
        ],
    )
    ids = ask(store, embedder, "river flooding", as_of=T0 + timedelta(hours=1))
    assert ids == ["past"]


def test_since_drops_posts_older_than_the_window(store: EdgeStore, embedder: Embedder) -> None:
    add(
        store,
        embedder,
        [
            make_post("old", "power outage downtown", hours=0),
            make_post("new", "power outage downtown still", hours=30),
        ],
    )
    ids = ask(store, embedder, "power outage", since=T0 + timedelta(hours=24))
    assert ids == ["new"]


def test_half_life_ranks_the_recent_post_above_a_slightly_better_old_one(
    store: EdgeStore, embedder: Embedder
) -> None:
    add(
        store,
        embedder,
        [
            make_post("old", "earthquake hits the coast, buildings damaged", hours=0),
            make_post("recent", "earthquake on the coast, some damage reported", hours=72),
        ],
    )
    as_of = T0 + timedelta(hours=73)
    plain = ask(store, embedder, "earthquake hits the coast buildings damaged", as_of=as_of)
    decayed = ask(
        store,
        embedder,
        "earthquake hits the coast buildings damaged",
        as_of=as_of,
        half_life=timedelta(hours=12),
    )
    assert plain[0] == "old"
    assert decayed[0] == "recent"


def test_hybrid_finds_a_post_by_its_authors_handle_which_dense_cannot_see(
    store: EdgeStore, embedder: Embedder
) -> None:
    # The handle is only in the BM25 document (dense embeds the text alone).
    posts = [make_post(f"p{i}", f"thoughts on the weather, part {i}", hours=i) for i in range(30)]
    posts.append(
        make_post(
            "by-handle",
            "thoughts on the weather today",
            hours=5,
            author="zorblaxian.example.social",
        )
    )
    add(store, embedder, posts)
    query = "what is zorblaxian saying"
    assert "by-handle" not in ask(store, embedder, query, mode="dense", limit=3)
    assert ask(store, embedder, query, mode="sparse", limit=3)[0] == "by-handle"
    assert ask(store, embedder, query, mode="hybrid", limit=3)[0] == "by-handle"


def test_filters_on_author_hashtag_and_language(store: EdgeStore, embedder: Embedder) -> None:
    add(
        store,
        embedder,
        [
            make_post(
                "a",
                "election results tonight",
                author="alice.bsky.social",
                lang="en",
                hashtags=["Election"],
            ),
            make_post("b", "election results tonight", author="bob@mastodon.social", lang="en"),
            make_post(
                "c",
                "resultados de la elección",
                author="carla.bsky.social",
                lang="es",
                hashtags=["election"],
            ),
        ],
    )
    assert ask(store, embedder, "election", authors=["@alice.bsky.social"]) == ["a"]
    assert sorted(ask(store, embedder, "election", hashtags=["#ELECTION"])) == ["a", "c"]
    assert ask(store, embedder, "election", langs=["es"]) == ["c"]


def test_hits_say_why_they_matched(store: EdgeStore, embedder: Embedder) -> None:
    add(store, embedder, [make_post("a", "solar eclipse viewing tips", hours=0)])
    text = "solar eclipse"
    hits = store.query(
        StoreQuery(
            text=text,
            dense=embedder.embed([text])[0].tolist(),
            as_of=T0 + timedelta(hours=24),
            half_life=timedelta(hours=24),
        )
    )
    why = hits[0].why
    assert why["dense"] > 0.5
    assert why["sparse"] > 0
    # One half-life old: the decaying part is halved above the floor.
    assert why["recency"] == pytest.approx(RECENCY_FLOOR + (1 - RECENCY_FLOOR) * 0.5)
    assert hits[0].score == pytest.approx(why["fused"] * why["recency"], rel=1e-4)


def test_a_query_vector_of_the_wrong_size_is_rejected(store: EdgeStore) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        store.query(StoreQuery(text="x", dense=[0.1, 0.2]))


def test_reopening_the_shard_keeps_its_posts(tmp_path: Path, embedder: Embedder) -> None:
    first = EdgeStore(tmp_path / "s", embedder.dim)
    add(first, embedder, [make_post("a", "kept across restarts")])
    first.close()
    again = EdgeStore(tmp_path / "s", embedder.dim)
    try:
        assert [p.text for p in again.get(["a"])] == ["kept across restarts"]
        assert ask(again, embedder, "restarts") == ["a"]
    finally:
        again.close()


def test_a_shard_built_for_other_vectors_is_refused(tmp_path: Path) -> None:
    EdgeStore(tmp_path / "s", 8).close()
    with pytest.raises(StoreUnavailable, match="other vectors"):
        EdgeStore(tmp_path / "s", 16)


def test_a_shard_open_in_another_process_is_unavailable(store: EdgeStore) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from retrieval.edge_store import EdgeStore\n"
        "from retrieval.store import StoreUnavailable\n"
        "try:\n"
        f"    EdgeStore(Path({str(store.path)!r}), {store.dim})\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "in use by another process" in done.stdout


def test_summary_counts_posts_by_source_with_date_range(
    store: EdgeStore, embedder: Embedder
) -> None:
    add(
        store,
        embedder,
        [
            make_post("a", "one", hours=0, source="jetstream"),
            make_post("b", "two", hours=5, source="jetstream"),
            make_post("c", "three", hours=9, source="mastodon"),
        ],
    )
    summary = store.summary()
    assert summary.total == 3
    assert summary.by_source == {"jetstream": 2, "mastodon": 1}
    assert summary.oldest == T0
    assert summary.newest == T0 + timedelta(hours=9)


def test_get_returns_posts_in_the_order_asked(store: EdgeStore, embedder: Embedder) -> None:
    add(store, embedder, [make_post("a", "one"), make_post("b", "two")])
    assert [p.id for p in store.get(["b", "missing", "a"])] == ["b", "a"]


def test_the_raw_source_event_is_not_stored(store: EdgeStore, embedder: Embedder) -> None:
    add(store, embedder, [make_post("a", "one", raw={"big": "x" * 1000})])
    assert store.get(["a"])[0].raw is None
