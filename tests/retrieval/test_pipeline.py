"""The whole Searcher pipeline on a real Edge shard: understanding, widening, threads, odd input."""

from __future__ import annotations

from datetime import timedelta

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.search import BadSearch, Searcher, SearchOptions
from tests.retrieval.builders import T0, add, make_post

NOW = T0 + timedelta(hours=48)


@pytest.fixture
def searcher(store: EdgeStore, embedder: Embedder) -> Searcher:
    add(
        store,
        embedder,
        [
            make_post(
                "old-fire",
                "warehouse fire downtown, smoke everywhere",
                hours=0,
                author="a.bsky.social",
            ),
            make_post(
                "keynote",
                "the keynote just started, new phone announced",
                hours=40,
                author="b.bsky.social",
            ),
            make_post(
                "keynote-2",
                "watching the keynote live, the new phone looks great",
                hours=40.5,
                author="c.bsky.social",
            ),
            make_post(
                "pre",
                "phone rumours before the event: bigger battery?",
                hours=30,
                author="d.bsky.social",
            ),
            make_post(
                "after", "the battery on that new phone is a joke", hours=46, author="e.bsky.social"
            ),
            make_post(
                "reply",
                "agreed, totally overpriced",
                hours=47,
                author="f.bsky.social",
                reply_to="after",
            ),
            make_post(
                "tagged",
                "fresh package release for data frames",
                hours=47.5,
                author="g.bsky.social",
                hashtags=["rstats"],
                lang="en",
            ),
            make_post(
                "rt",
                "RT @b: the keynote just started, new phone announced",
                hours=40.2,
                author="h.bsky.social",
            ),
        ],
    )
    return Searcher(store, embedder)


def test_right_now_prefers_recent_posts_without_dropping_older_ones(searcher: Searcher) -> None:
    ids = [h.post.id for h in searcher.search("phone right now", as_of=NOW)]
    # "right now" is a preference, not a filter: the day-old rumour still ranks, below the news.
    assert "pre" in ids
    assert ids.index("after") < ids.index("pre")


def test_time_words_reorder_the_plain_ranking(searcher: Searcher) -> None:
    plain = [h.post.id for h in searcher.search("phone", as_of=NOW)]
    now = [h.post.id for h in searcher.search("phone right now", as_of=NOW)]
    assert set(plain) == set(now), "a time word never hides a post the plain query finds"
    assert now.index("after") <= plain.index("after")


def test_an_explicit_since_filters_hard(searcher: Searcher) -> None:
    ids = [h.post.id for h in searcher.search("phone since:5h", as_of=NOW)]
    assert ids and "pre" not in ids and "keynote" not in ids
    assert "after" in ids


def test_empty_window_widens_and_says_so(searcher: Searcher) -> None:
    # Ten hours in, only the fire (at hour 0) exists: the last hour is empty, so are 4 hours.
    result = searcher.find("warehouse fire since:1h", as_of=T0 + timedelta(hours=10))
    assert result.widened
    assert result.hits[0].post.id == "old-fire"
    assert any("widened" in note for note in result.notes)


def test_search_does_not_widen_silently(searcher: Searcher) -> None:
    assert searcher.search("warehouse fire since:1h", as_of=T0 + timedelta(hours=10)) == []


def test_from_and_tag_filters_come_from_the_text(searcher: Searcher) -> None:
    assert [h.post.id for h in searcher.search("phone from:e.bsky.social", as_of=NOW)] == ["after"]
    assert [h.post.id for h in searcher.search("#rstats release lang:en", as_of=NOW)] == ["tagged"]


def test_quoted_phrase_must_appear(searcher: Searcher) -> None:
    ids = [h.post.id for h in searcher.search('"bigger battery" phone', as_of=NOW)]
    assert ids == ["pre"]


def test_since_the_keynote_prefers_posts_after_the_first_strong_keynote_post(
    searcher: Searcher,
) -> None:
    result = searcher.find("phone battery since the keynote", as_of=NOW)
    assert result.since is None, "an event phrase is a preference, never a window"
    began = f"began at about {T0 + timedelta(hours=40):%Y-%m-%d %H:%M}"
    assert any(began in note for note in result.notes)
    ids = [h.post.id for h in result.hits]
    assert ids.index("after") < ids.index("pre")


def test_reposts_collapse_into_the_original(searcher: Searcher) -> None:
    ids = [h.post.id for h in searcher.search("keynote started phone announced", as_of=NOW)]
    assert ("keynote" in ids) != ("rt" in ids)


def test_a_reply_brings_its_parent_as_context(searcher: Searcher) -> None:
    hits = searcher.search("totally overpriced", as_of=NOW, k=3)
    reply = next(h for h in hits if h.post.id == "reply")
    assert [p.id for p in reply.context] == ["after"]
    off = SearchOptions(threads=False)
    reply = next(
        h
        for h in searcher.search("totally overpriced", as_of=NOW, options=off)
        if h.post.id == "reply"
    )
    assert reply.context == ()


def test_a_parent_newer_than_as_of_is_not_attached(
    searcher: Searcher, store: EdgeStore, embedder: Embedder
) -> None:
    add(store, embedder, [make_post("child", "replying to the future", hours=1, reply_to="after")])
    hits = searcher.search("replying to the future", as_of=T0 + timedelta(hours=2))
    assert hits[0].post.id == "child" and hits[0].context == ()


def test_hnsw_ef_is_accepted_and_bounded(store: EdgeStore, embedder: Embedder) -> None:
    add(store, embedder, [make_post("x", "harbour festival fireworks")])
    assert (
        Searcher(store, embedder, SearchOptions(hnsw_ef=256)).search("fireworks")[0].post.id == "x"
    )
    with pytest.raises(ValueError, match="hnsw_ef"):
        Searcher(store, embedder, SearchOptions(hnsw_ef=0))


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f525\U0001f4f1\U0001f525",
        "\u05d4\u05d8\u05dc\u05e4\u05d5\u05df \u05d4\u05d7\u05d3\u05e9",
        "\u0627\u0644\u0647\u0627\u062a\u0641 \u0627\u0644\u062c\u062f\u064a\u062f",
        "'; DROP TABLE posts; --",
        'title:phone AND battery~2 OR "keynote"^3 NOT (rumours)',
        "phone\x1b[31m battery\x07\x7f",
        "phone " * 1_600,
    ],
)
def test_odd_queries_get_an_answer_not_a_traceback(searcher: Searcher, text: str) -> None:
    result = searcher.find(text, as_of=NOW)
    assert isinstance(result.hits, list)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\x1b\x07\x7f", "empty"),
        ("x" * 10_001, "10 kB"),
        ("phone in the last 900 years", "30 years"),
        ("phone since 2999-01-01", "future"),
        ('from: lang: # ""', "from: wants a handle"),
        ("phone lang:klingon", "not a language code"),
        ("phone since:soon", "not a time"),
        ("phone since:2024-05-02 until:2024-05-01", "not before"),
        ("phone since:2999-01-01", "future"),
    ],
)
def test_unusable_queries_are_refused_plainly(searcher: Searcher, text: str, message: str) -> None:
    with pytest.raises(BadSearch, match=message):
        searcher.find(text, as_of=NOW)


def test_absurd_since_argument_is_refused(searcher: Searcher) -> None:
    with pytest.raises(BadSearch, match="30 years"):
        searcher.find("phone", since=timedelta(days=365 * 900))
