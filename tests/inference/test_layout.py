"""Prompt layout for prefix caching, and history truncation."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from inference.errors import InvalidRequest
from inference.layout import (
    common_prefix_length,
    conversation_prefix_ratios,
    fit_to_window,
    shared_prefix_ratio,
    turn_messages,
)
from inference.local import LocalEngine
from inference.messages import ChatMessage

SYSTEM = "You are Quip, a witty assistant. Cite posts by number. " * 6
FRESH = [
    "1. storm warning tonight for the coast\n2. rain all week says the weather service",
    "1. football final tonight\n2. fans gather downtown for the match",
    "1. rocket launch delayed by wind\n2. new science report on space weather",
    "1. elections poll update\n2. markets rally after the vote",
]
QUESTIONS = ["what is the feed saying?", "and sports?", "anything about space?", "markets?"]
REPLIES = ["Rain, mostly. [1]", "A final tonight. [1][2]", "A delayed launch. [1]", "Up. [2]"]


def _conversation(layout: str) -> list[list[ChatMessage]]:
    prompts: list[list[ChatMessage]] = []
    history: list[ChatMessage] = []
    for fresh, question, reply in zip(FRESH, QUESTIONS, REPLIES, strict=True):
        if layout == "stable-first":
            msgs = turn_messages(SYSTEM, history, question, fresh_context=fresh)
        else:  # the naive layout: fresh posts spliced into the system prompt each turn
            msgs = [
                ChatMessage(role="system", content=f"{fresh}\n{SYSTEM}"),
                *history,
                ChatMessage(role="user", content=question),
            ]
        prompts.append(msgs)
        history = [*msgs[1:], ChatMessage(role="assistant", content=reply)]
    return prompts


def _ratios(engine: LocalEngine, prompts: list[list[ChatMessage]]) -> list[float]:
    # A server's prefix cache holds the previous prompt *and its reply*.
    ids = [engine.prompt_ids(p) for p in prompts]
    with_reply = [
        engine.prompt_ids(p) + engine.tokenize(r) for p, r in zip(prompts, REPLIES, strict=True)
    ]
    return [shared_prefix_ratio(with_reply[i - 1], ids[i]) for i in range(1, len(ids))]


def test_stable_first_layout_reuses_at_least_80_percent_from_turn_two(
    tiny_engine: LocalEngine,
) -> None:
    ratios = _ratios(tiny_engine, _conversation("stable-first"))
    assert len(ratios) == 3
    assert min(ratios) >= 0.8, ratios


def test_fresh_context_in_the_system_prompt_defeats_prefix_reuse(tiny_engine: LocalEngine) -> None:
    ratios = _ratios(tiny_engine, _conversation("naive"))
    assert max(ratios) < 0.2, ratios


def test_earlier_turn_prompt_is_a_byte_prefix_of_the_next(tiny_engine: LocalEngine) -> None:
    prompts = _conversation("stable-first")
    first, second = (tiny_engine.render(p) for p in prompts[:2])
    assert second.startswith(first)


def test_prefix_ratio_arithmetic() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared_prefix_ratio([1, 2, 3], [1, 2, 4, 5]) == 0.5
    assert shared_prefix_ratio([1], []) == 0.0
    assert conversation_prefix_ratios([[1, 2], [1, 2, 3, 4], [9]]) == [0.5, 0.0]


def _words(msgs: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.split()) for m in msgs)


def test_fit_to_window_drops_oldest_turns_whole_and_says_so() -> None:
    system = ChatMessage(role="system", content="sys " * 10)
    turns = [
        ChatMessage(role=r, content=f"{r} {i} " + "x " * 8)
        for i in range(6)
        for r in ("user", "assistant")
    ]
    question = ChatMessage(role="user", content="q " * 5)
    kept, report = fit_to_window([system, *turns, question], _words, budget=60)
    assert kept[0] == system and kept[-1] == question
    assert report.truncated and report.dropped_messages % 2 == 0
    assert kept[1:-1] == turns[report.dropped_messages :]  # oldest gone, newest kept, in order
    assert _words(kept) <= 60 * 0.75


def test_fit_to_window_leaves_a_fitting_prompt_alone() -> None:
    msgs = [ChatMessage(role="user", content="short")]
    kept, report = fit_to_window(msgs, _words, budget=10)
    assert kept == msgs and not report.truncated


def test_fit_to_window_refuses_when_system_and_question_alone_do_not_fit() -> None:
    msgs = [ChatMessage(role="system", content="s " * 50), ChatMessage(role="user", content="q")]
    with pytest.raises(InvalidRequest, match="too long"):
        fit_to_window(msgs, _words, budget=10)
