"""Diversity: reposts collapse, no author fills the list, MMR spreads the stories."""

from __future__ import annotations

from typing import Any

from retrieval.diversity import DiversityOptions, collapse_duplicates, diversify
from retrieval.engagement import boost
from retrieval.store import Hit
from tests.retrieval.builders import make_post


def hit(pid: str, text: str, score: float, author: str | None = None, **fields: Any) -> Hit:
    return Hit(post=make_post(pid, text, author=author, **fields), score=score)


def test_reposts_and_near_copies_collapse_into_the_best_ranked_copy() -> None:
    hits = [
        hit("orig", "Huge explosion at the marathon finish line http://t.co/a", 0.9),
        hit("rt", "RT @bob: Huge explosion at the marathon finish line http://t.co/b", 0.8),
        hit("other", "Runners are being taken to hospital", 0.7),
    ]
    out = collapse_duplicates(hits)
    assert [h.post.id for h in out] == ["orig", "other"]
    assert out[0].why["duplicates"] == 1.0


def test_no_author_gets_more_than_the_cap() -> None:
    hits = [
        hit(f"a{i}", f"storm update: {word} is flooded", 1 - i / 100, "alice")
        for i, word in enumerate(["mainstreet", "harbour", "downtown", "airport", "campus", "park"])
    ]
    hits += [hit("b", "power is out downtown", 0.5, "bob")]
    out = diversify(hits, 5, "storm updates", DiversityOptions(per_author=2, mmr_lambda=None))
    authors = [h.post.author for h in out]
    assert authors.count("alice") == 2 and "bob" in authors


def test_an_author_the_query_names_is_not_capped() -> None:
    hits = [
        hit(
            f"k{i}",
            f"a thread on {topic} history",
            1 - i / 100,
            "kevinmkruse.bsky.social",
            author_name="Kevin M. Kruse",
        )
        for i, topic in enumerate(
            ["civil rights", "redlining", "suburbs", "tax revolt", "religion"]
        )
    ]
    out = diversify(hits, 5, "what has Kevin Kruse been posting", DiversityOptions(per_author=2))
    assert len(out) == 5


def test_mmr_prefers_a_new_story_over_a_rewording_of_the_first() -> None:
    hits = [
        hit("a", "flood waters rising in the old town tonight", 1.0),
        hit("b", "flood waters rising in the old town this evening", 0.95),
        hit("c", "bridge closed on route 9 for repairs", 0.9),
    ]
    opts = DiversityOptions(per_author=None, mmr_lambda=0.5, collapse_duplicates=False)
    assert [h.post.id for h in diversify(hits, 2, "flood", opts)] == ["a", "c"]


def test_engagement_boost_lifts_a_liked_post_and_says_by_how_much() -> None:
    hits = [
        hit("quiet", "same story", 1.0, like_count=0),
        hit("loved", "same story", 0.9, like_count=500),
    ]
    out = boost(hits, 0.5)
    assert [h.post.id for h in out] == ["loved", "quiet"]
    assert out[0].why["engagement"] == 1.5
    assert boost(hits, 0) == hits


TOPICS = ["dams", "levees", "pumps", "sirens", "ferries"]


def test_a_from_filter_by_handle_lifts_the_cap_for_that_author() -> None:
    hits = [
        hit(f"p{i}", f"notes on {t}", 1 - i / 100, "alice.bsky.social", author_id="did:plc:alice")
        for i, t in enumerate(TOPICS)
    ]
    assert len(diversify(hits, 5, "notes", exempt_authors=["alice.bsky.social"])) == 5
    assert len(diversify(hits, 5, "notes")) == 3


def test_common_question_words_do_not_name_an_author() -> None:
    hits = [
        hit(f"p{i}", f"notes on {t}", 1 - i / 100, "news.example", author_name="The People")
        for i, t in enumerate(TOPICS)
    ]
    assert len(diversify(hits, 5, "what are the people saying")) == 3
