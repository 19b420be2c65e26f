"""Query understanding: time words become windows and half-lives, syntax becomes filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from retrieval.query_syntax import QueryNotUnderstood, event_start, parse_query
from retrieval.store import Hit
from tests.retrieval.builders import make_post

NOW = datetime(2024, 5, 8, 15, 30, tzinfo=UTC)


def test_right_now_decays_faster_than_this_week() -> None:
    now_q = parse_query("what is happening right now", NOW)
    week_q = parse_query("what happened this week", NOW)
    assert now_q.half_life is not None and week_q.half_life is not None
    assert now_q.half_life < week_q.half_life
    assert now_q.prefer_within is not None and week_q.prefer_within is not None
    assert now_q.prefer_within < week_q.prefer_within
    assert now_q.text == "what is happening"


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("floods in the last 2 hours", timedelta(hours=2)),
        ("floods past hour", timedelta(hours=1)),
        ("floods over the past few days", timedelta(days=3)),
        ("floods today", timedelta(hours=15, minutes=30)),
        ("floods this afternoon", timedelta(hours=6)),
        ("floods since monday", timedelta(days=2, hours=15, minutes=30)),
        ("floods since 2024-05-01", timedelta(days=7, hours=15, minutes=30)),
        ("yesterday's floods", timedelta(hours=48)),
    ],
)
def test_time_words_are_preferences_not_windows(text: str, span: timedelta) -> None:
    parsed = parse_query(text, NOW)
    assert parsed.since is None and parsed.until is None, "time words never filter"
    assert parsed.prefer_within == span
    assert parsed.text == "floods"
    assert parsed.half_life is not None


def test_today_is_read_in_the_askers_time_zone() -> None:
    # 15:30 UTC is 11:30 in New York (EDT) and 00:30 the next day in Tokyo.
    utc = parse_query("floods today", NOW)
    new_york = parse_query("floods today", NOW, ZoneInfo("America/New_York"))
    tokyo = parse_query("floods today", NOW, ZoneInfo("Asia/Tokyo"))
    assert utc.prefer_within == timedelta(hours=15, minutes=30)
    assert new_york.prefer_within == timedelta(hours=11, minutes=30)
    # Half an hour into a Tokyo day: "today" still means at least the last six hours.
    assert tokyo.prefer_within == timedelta(hours=6)


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("floods since:2024-05-01", datetime(2024, 5, 1, tzinfo=UTC), None),
        ("floods since:6h", NOW - timedelta(hours=6), None),
        ("floods until:2024-05-03T12:00Z", None, datetime(2024, 5, 3, 12, tzinfo=UTC)),
        (
            "since:3d until:1d floods",
            NOW - timedelta(days=3),
            NOW - timedelta(days=1),
        ),
    ],
)
def test_since_and_until_operators_are_hard_windows(
    text: str, since: datetime | None, until: datetime | None
) -> None:
    parsed = parse_query(text, NOW)
    assert (parsed.since, parsed.until) == (since, until)
    assert parsed.text == "floods"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("floods since:soon", "not a time"),
        ("floods until:", "not a time"),
        ("floods since:2024-05-05 until:2024-05-01", "not before"),
        ("floods since:2030-01-01", "future"),
        ("floods lang:klingon", "not a language code"),
        ("floods from:", "from: wants a handle"),
    ],
)
def test_malformed_or_contradictory_operators_are_refused_plainly(text: str, message: str) -> None:
    with pytest.raises(QueryNotUnderstood, match=message):
        parse_query(text, NOW)


def test_filter_syntax_becomes_filters_and_keeps_searchable_words() -> None:
    parsed = parse_query('from:@alice.bsky.social #RStats lang:EN "tidy data" packages', NOW)
    assert parsed.authors == ("alice.bsky.social",)
    assert parsed.hashtags == ("rstats",)
    assert parsed.langs == ("en",)
    assert parsed.phrases == ("tidy data",)
    assert parsed.text == "RStats tidy data packages"


def test_curly_quotes_are_phrases_too() -> None:
    assert parse_query("\u201cnot like us\u201d drake", NOW).phrases == ("not like us",)


def test_a_query_of_only_filters_still_has_text_to_rank_on() -> None:
    parsed = parse_query("from:alice today", NOW)
    assert parsed.authors == ("alice",) and parsed.text == "alice"


def test_since_an_event_is_left_for_the_index_to_date() -> None:
    parsed = parse_query("what are people saying since the keynote", NOW)
    assert parsed.event == "the keynote"
    assert parsed.since is None
    assert parsed.text == "what are people saying"


def test_since_as_a_conjunction_is_not_a_time_word() -> None:
    parsed = parse_query("since you asked, cats", NOW)
    assert parsed.event is None and parsed.since is None
    assert not parsed.understood


@pytest.mark.parametrize(
    "text", ["floods in the last 900 years", "floods since 2999-01-01", "floods since 1900-01-01"]
)
def test_absurd_windows_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(QueryNotUnderstood, match=r"30 years|future"):
        parse_query(text, NOW)


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f525\U0001f525\U0001f30a",
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0645\u0631\u062d\u0628\u0627",
        "'; DROP TABLE posts; --",
        "title:foo AND bar~2 OR baz^3 NOT (qux)",
        "x" * 10_000,
    ],
)
def test_odd_queries_pass_through_as_text(text: str) -> None:
    parsed = parse_query(text, NOW)
    assert parsed.text.strip()
    assert parsed.since is None and not parsed.authors


def test_control_characters_become_spaces() -> None:
    assert parse_query("red\x1b[31m alert\x07", NOW).text == "red [31m alert"


def _hit(pid: str, hours: float, dense: float) -> Hit:
    return Hit(post=make_post(pid, pid, hours=hours), score=dense, why={"dense": dense})


def test_event_start_is_the_earliest_strong_match() -> None:
    hits = [_hit("late-best", 10, 0.9), _hit("early-strong", 2, 0.8), _hit("earliest-weak", 0, 0.4)]
    began = event_start("the keynote", NOW, lambda text, since, as_of: hits)
    assert began == hits[1].post.created_at


def test_event_start_is_none_when_nothing_matches() -> None:
    assert event_start("the keynote", NOW, lambda text, since, as_of: []) is None
