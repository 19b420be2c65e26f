"""The bundled dev set is consistent: every label points at a post that exists and is visible."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from retrieval.evaluation import read_posts, read_queries

DEVSET = Path(__file__).parents[2] / "retrieval" / "devset"


def test_every_relevant_post_exists_and_was_posted_before_its_query() -> None:
    posts = {p.id: p for p in read_posts(DEVSET / "posts.jsonl")}
    queries = read_queries(DEVSET / "sample_queries.jsonl")
    assert len(queries) >= 60
    assert 2_000 <= len(posts) <= 3_000
    for q in queries:
        assert q.relevant, q.query
        for pid in q.relevant:
            assert pid in posts, (q.query, pid)
            if q.now is not None:
                assert posts[pid].created_at <= q.now, (q.query, pid)


def test_dev_posts_fit_the_size_budget_and_hold_only_permitted_sources() -> None:
    path = DEVSET / "posts.jsonl"
    assert path.stat().st_size <= 2_000_000
    sources = {json.loads(line).get("source") for line in path.open(encoding="utf-8")}
    assert sources <= {
        "bluesky_most_liked",
        "mastodon_rtoot_fixtures",
        "crisislex_t26",
        "crisislex_t6",
    }


def test_queries_carry_an_rfc3339_now() -> None:
    for line in (DEVSET / "sample_queries.jsonl").open(encoding="utf-8"):
        assert datetime.fromisoformat(json.loads(line)["now"]).tzinfo is not None
