from __future__ import annotations

from bot.search_plan import plan_search


def test_small_talk_needs_no_feed():
    for text in ("hi", "Thanks!", "lol", "good morning :)", "ok"):
        assert not plan_search(text, [], has_history=False).needs_feed, text


def test_a_question_about_a_topic_searches_for_itself():
    plan = plan_search("What are people saying about the earthquake?", [], has_history=False)
    assert plan.needs_feed and plan.query == "What are people saying about the earthquake?"


def test_follow_up_on_the_answer_reuses_the_conversation():
    plan = plan_search("why?", ["earthquake italy"], has_history=True)
    assert not plan.needs_feed


def test_elliptical_follow_up_is_rewritten_into_a_standalone_query():
    plan = plan_search(
        "and what about Bluesky?",
        ["what is said about the earthquake on mastodon"],
        has_history=True,
    )
    assert plan.needs_feed and plan.query is not None
    words = plan.query.split()
    assert "earthquake" in words and "bluesky" in words and "mastodon" not in words


def test_pronoun_follow_up_keeps_the_topic():
    plan = plan_search("is it still going?", ["tesla stock crash"], has_history=True)
    assert (
        plan.query is not None and "tesla" in plan.query and "going" not in plan.query.split()[:1]
    )


def test_a_new_full_question_is_not_rewritten():
    plan = plan_search(
        "What do people think of the Princeton protests?", ["tesla"], has_history=True
    )
    assert plan.query == "What do people think of the Princeton protests?"
