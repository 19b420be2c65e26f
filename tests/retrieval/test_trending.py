"""Trending topics from Redis counters, against a real redis-server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from retrieval.post import Post
from retrieval.trending import TrendCounter, topics_of

NOW = datetime(2013, 4, 15, 20, 0, tzinfo=UTC)


def post(n: int, text: str, minutes_ago: float, author: str | None = None, **kw: object) -> Post:
    return Post(
        id=f"t:{n}",
        text=text,
        created_at=NOW - timedelta(minutes=minutes_ago),
        author=author or f"user{n}",
        **kw,  # type: ignore[arg-type]
    )


def test_topics_are_hashtags_cashtags_and_capitalised_phrases() -> None:
    p = post(
        1,
        "Explosions at the Boston Marathon finish line. #prayforboston $SPY down",
        1,
        hashtags=["BostonStrong"],
    )
    topics = topics_of(p)
    assert {"#bostonstrong", "#prayforboston", "$SPY", "boston marathon"} <= set(topics)
    assert topics["boston marathon"] == "Boston Marathon"
    assert "explosions" not in topics  # a sentence-initial word alone is not a topic


def test_urls_and_mentions_are_not_topics() -> None:
    assert topics_of(post(1, "@CNN see https://Example.com/Story", 1)) == {}


async def test_a_burst_against_a_quiet_baseline_trends_first(redis_url: str) -> None:
    counter = TrendCounter(aioredis.from_url(redis_url), "t:trend")
    background = [
        post(i, f"Lovely weather in Glasgow today {i}", 60 * (1 + i % 20)) for i in range(40)
    ]
    steady_now = [post(100 + i, f"Glasgow weather again {i}", 5 + i) for i in range(3)]
    burst = [
        post(200 + i, f"Explosions near the Boston Marathon finish {i}", i % 50) for i in range(12)
    ]
    await counter.record(background + steady_now + burst)
    trends = await counter.trending(timedelta(hours=1), NOW)
    assert trends[0].label == "Boston Marathon"
    assert trends[0].count == 12
    assert trends[0].growth is None  # nothing about it in the baseline
    assert len(trends[0].posts) == 3
    assert len({p["author"] for p in trends[0].posts}) == 3
    assert "glasgow" not in [t.topic for t in trends[:1]]


async def test_as_of_a_moment_ignores_what_came_after(redis_url: str) -> None:
    counter = TrendCounter(aioredis.from_url(redis_url), "t:trend")
    await counter.record([post(i, f"The Met Gala red carpet {i}", -30 - i) for i in range(10)])
    assert await counter.trending(timedelta(hours=1), NOW) == []
    later = await counter.trending(timedelta(hours=1), NOW + timedelta(hours=1))
    assert [t.label for t in later] == ["Met Gala"]


async def test_an_absurd_window_is_refused(redis_url: str) -> None:
    counter = TrendCounter(aioredis.from_url(redis_url), "t:trend")
    with pytest.raises(ValueError, match="window"):
        await counter.trending(timedelta(days=90), NOW)
