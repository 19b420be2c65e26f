"""Searcher: plain-language errors for unusable searches, and a working path for good ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.search import BadSearch, Searcher
from tests.retrieval.builders import T0, add, make_post


@pytest.fixture
def searcher(store: EdgeStore, embedder: Embedder) -> Searcher:
    add(
        store,
        embedder,
        [
            make_post("a", "the marathon was stopped after two explosions", hours=0),
            make_post("b", "the marathon finish line reopened", hours=100),
        ],
    )
    return Searcher(store, embedder)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "empty"),
        ({"text": "   \n\t"}, "empty"),
        ({"text": "x" * 10_001}, "longer than 10 kB"),
        ({"text": "é" * 5_001}, "longer than 10 kB"),
        ({"text": "ok\x00"}, "NUL"),
        ({"text": "ok", "k": 0}, "k must be"),
        ({"text": "ok", "k": 100_000}, "k must be"),
        ({"text": "ok", "since": timedelta(hours=-1)}, "positive duration"),
        ({"text": "ok", "since": timedelta(days=365 * 100)}, "30 years"),
        ({"text": "ok", "half_life": timedelta(0)}, "at least one second"),
        ({"text": "ok", "half_life": timedelta(days=365 * 100)}, "30 years"),
        ({"text": "ok", "as_of": datetime(1900, 1, 1, tzinfo=UTC)}, "plausible"),
        ({"text": "ok", "mode": "fuzzy"}, "unknown mode"),
    ],
)
def test_unusable_searches_raise_a_plain_bad_search(
    searcher: Searcher, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BadSearch, match=message):
        searcher.search(**kwargs)  # type: ignore[arg-type]


def test_bad_search_is_a_value_error_for_generic_handlers() -> None:
    assert issubclass(BadSearch, ValueError)


def test_search_honours_as_of_and_since(searcher: Searcher) -> None:
    as_of = T0 + timedelta(hours=1)
    assert [h.post.id for h in searcher.search("marathon", as_of=as_of)] == ["a"]
    late = T0 + timedelta(hours=101)
    assert [
        h.post.id for h in searcher.search("marathon", as_of=late, since=timedelta(hours=2))
    ] == ["b"]


def test_naive_as_of_is_read_as_utc(searcher: Searcher) -> None:
    naive = (T0 + timedelta(hours=1)).replace(tzinfo=None)
    assert [h.post.id for h in searcher.search("marathon", as_of=naive)] == ["a"]


def test_sparse_search_skips_embedding_and_still_finds_keywords(searcher: Searcher) -> None:
    assert searcher.search("explosions", mode="sparse")[0].post.id == "a"
