"""The in-process engine on a tiny random MoE: plumbing, not wit."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from inference.engine import Engine, collect
from inference.errors import EngineOverloaded, InvalidRequest
from inference.local import LocalEngine
from inference.messages import ChatMessage, SamplingParams

GREEDY = SamplingParams(max_tokens=16, temperature=0)


async def _eventually(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def _msgs(question: str = "what is the feed saying about the storm today") -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="you are a bot"),
        ChatMessage(role="user", content=question),
    ]


def test_local_engine_satisfies_the_engine_protocol(tiny_engine: LocalEngine) -> None:
    assert isinstance(tiny_engine, Engine)


async def test_greedy_reply_matches_transformers_generate(tiny_engine: LocalEngine) -> None:
    msgs = _msgs()
    ours = await tiny_engine.generate(msgs, GREEDY)
    ids = tiny_engine.prompt_ids(msgs)
    model, tok = tiny_engine._model, tiny_engine._tok
    out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    new = [t for t in out[0, len(ids) :].tolist() if t not in tiny_engine._eos]
    assert ours.text == tok.decode(new, skip_special_tokens=True)
    assert ours.usage.prompt_tokens == len(ids)


async def test_stream_joins_to_the_same_text_as_generate(tiny_engine: LocalEngine) -> None:
    whole = await tiny_engine.generate(_msgs(), GREEDY)
    chunks = [c async for c in tiny_engine.stream(_msgs(), GREEDY)]
    text_chunks = [c for c in chunks if c.text]
    assert len(text_chunks) > 1
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


async def test_max_tokens_stops_with_length(tiny_engine: LocalEngine) -> None:
    c = await tiny_engine.generate(_msgs(), SamplingParams(max_tokens=3, temperature=0))
    assert c.usage.completion_tokens == 3
    assert c.choices[0].finish_reason == "length"


async def test_stop_sequence_cuts_the_reply_before_it(tiny_engine: LocalEngine) -> None:
    whole = (await tiny_engine.generate(_msgs(), SamplingParams(max_tokens=24, temperature=0))).text
    stop = next(m.group(0) for m in re.finditer(r"\S{2,4}", whole) if m.start() > 0)
    params = SamplingParams(max_tokens=24, temperature=0, stop=(stop,))
    chunks = [c async for c in tiny_engine.stream(_msgs(), params)]
    text = "".join(c.text for c in chunks)
    assert text == whole[: whole.find(stop)]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


async def test_same_seed_gives_same_samples_and_n_gives_n_choices(tiny_engine: LocalEngine) -> None:
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=7)
    a = await tiny_engine.generate(_msgs(), params)
    b = await tiny_engine.generate(_msgs(), params)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1  # variants differ from each other
    assert a.usage.prompt_tokens == len(tiny_engine.prompt_ids(_msgs()))


async def test_json_schema_constraint_gives_parseable_json(tiny_engine: LocalEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["news", "sports"]}, "ok": {"type": "boolean"}},
        "required": ["label", "ok"],
    }
    c = await tiny_engine.generate(
        _msgs(), SamplingParams(max_tokens=40, temperature=1.0, seed=3, n=2, json_schema=schema)
    )
    for choice in c.choices:
        value = json.loads(choice.text, strict=False)
        assert value["label"] in {"news", "sports"} and isinstance(value["ok"], bool)
        assert choice.finish_reason == "stop"


async def test_regex_constraint_is_obeyed(tiny_engine: LocalEngine) -> None:
    c = await tiny_engine.generate(
        _msgs(), SamplingParams(max_tokens=10, regex=r"[0-9]{3}-(yes|no)")
    )
    assert re.fullmatch(r"[0-9]{3}-(yes|no)", c.text)


async def test_concurrent_requests_are_batched_and_match_solo_runs(tiny_model_path: Path) -> None:
    engine = LocalEngine.load(tiny_model_path, device="cpu", max_batch_size=8)
    try:
        questions = [f"question number {i} " + "about the news " * i for i in range(6)]
        together = await asyncio.gather(*(engine.generate(_msgs(q), GREEDY) for q in questions))
        assert engine.stats.max_batch_rows > 1
        solo = [await engine.generate(_msgs(q), GREEDY) for q in questions]
        assert [c.text for c in together] == [c.text for c in solo]
    finally:
        await engine.aclose()


async def test_closing_the_stream_cancels_the_request(tiny_model_path: Path) -> None:
    engine = LocalEngine.load(tiny_model_path, device="cpu")
    try:
        stream = engine.stream(_msgs(), SamplingParams(max_tokens=900, temperature=0))
        seen = 0
        async for chunk in stream:
            seen += bool(chunk.text)
            if seen == 2:
                break
        await stream.aclose()
        await _eventually(lambda: engine.stats.cancelled == 1 and engine.stats.active_rows == 0)
        assert engine.stats.cancelled == 1
        assert engine.stats.active_rows == 0
        assert engine.stats.completion_tokens < 900
    finally:
        await engine.aclose()


async def test_full_queue_is_refused_as_overloaded(tiny_model_path: Path) -> None:
    engine = LocalEngine.load(tiny_model_path, device="cpu", max_batch_size=1, max_waiting=1)
    try:
        long = SamplingParams(max_tokens=400, temperature=0)
        first = asyncio.create_task(collect(engine.stream(_msgs(), long)))
        await _eventually(lambda: engine.stats.active_rows == 1)
        second = asyncio.create_task(collect(engine.stream(_msgs(), long)))
        await _eventually(lambda: engine.stats.waiting == 1)
        with pytest.raises(EngineOverloaded):
            await engine.generate(_msgs(), long)
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    finally:
        await engine.aclose()


async def test_empty_messages_are_refused(tiny_engine: LocalEngine) -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        await tiny_engine.generate([], GREEDY)
    with pytest.raises(InvalidRequest, match="user"):
        await tiny_engine.generate([ChatMessage(role="system", content="x")], GREEDY)


def test_invalid_parameters_are_refused() -> None:
    for bad in (
        {"temperature": -1},
        {"top_p": 0},
        {"n": 0},
        {"max_tokens": 0},
        {"stop": ("",)},
        {"regex": "("},
        {"regex": "a", "json_schema": {"type": "object"}},
    ):
        with pytest.raises(InvalidRequest):
            SamplingParams.checked(**bad)


async def test_uncompilable_schema_is_an_invalid_request(tiny_engine: LocalEngine) -> None:
    with pytest.raises(InvalidRequest, match="constraint"):
        await tiny_engine.generate(_msgs(), SamplingParams(json_schema={"type": "no-such-type"}))


async def test_long_history_is_cut_in_the_middle_keeping_system_and_question(
    tiny_engine: LocalEngine,
) -> None:
    history: list[ChatMessage] = []
    for i in range(40):
        history.append(ChatMessage(role="user", content=f"old question {i} " + "news " * 20))
        history.append(ChatMessage(role="assistant", content=f"old answer {i} " + "sports " * 20))
    system = ChatMessage(role="system", content="SYSTEM-PROMPT stays")
    question = ChatMessage(role="user", content="THE-QUESTION stays")
    msgs = [system, *history, question]
    assert len(tiny_engine.prompt_ids(msgs)) > tiny_engine.context_window
    chunks = [
        c async for c in tiny_engine.stream(msgs, SamplingParams(max_tokens=8, temperature=0))
    ]
    report = chunks[-1].prompt
    assert report is not None and report.truncated and report.dropped_messages > 0
    assert report.dropped_messages % 2 == 0  # whole turns
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens <= tiny_engine.context_window


async def test_question_alone_longer_than_the_window_is_refused(tiny_engine: LocalEngine) -> None:
    huge = "storm " * (tiny_engine.context_window * 2)
    with pytest.raises(InvalidRequest, match="too long"):
        await tiny_engine.generate(_msgs(huge), GREEDY)


async def test_prefix_cache_reuses_turn_one_and_keeps_greedy_output_identical(
    tiny_model_path: Path, tiny_engine: LocalEngine
) -> None:
    cached = LocalEngine.load(tiny_model_path, device="cpu", prefix_cache_tokens=4096)
    try:
        system = ChatMessage(role="system", content="you are a bot that reads the feed " * 10)
        turn1 = [system, ChatMessage(role="user", content="what about the storm")]
        reply1 = await cached.generate(turn1, GREEDY)
        assert reply1.usage.cached_tokens == 0
        turn2 = [
            *turn1,
            ChatMessage(role="assistant", content=reply1.text),
            ChatMessage(role="user", content="and the football"),
        ]
        # Turn 2 runs batched beside an unrelated request, so its reply is cached from a padded row.
        other = [ChatMessage(role="user", content="unrelated " * 30)]
        warm, _ = await asyncio.gather(
            cached.generate(turn2, GREEDY), cached.generate(other, GREEDY)
        )
        cold = await tiny_engine.generate(turn2, GREEDY)
        assert warm.text == cold.text
        assert warm.usage.cached_tokens >= len(cached.prompt_ids(turn1)) - 1
        assert cold.usage.cached_tokens == 0
        turn3 = [
            *turn2,
            ChatMessage(role="assistant", content=warm.text),
            ChatMessage(role="user", content="and the vote"),
        ]
        warm3 = await cached.generate(turn3, GREEDY)
        assert warm3.text == (await tiny_engine.generate(turn3, GREEDY)).text
        assert warm3.usage.cached_tokens >= len(cached.prompt_ids(turn2)) - 1
        assert cached.prefix_cache is not None and cached.prefix_cache.hits >= 2
    finally:
        await cached.aclose()


@pytest.mark.parametrize("kind", ["mixtral", "olmoe", "granitemoe", "llama"])
async def test_other_moe_and_dense_architectures_stream_and_batch(
    kind: str, tmp_path: Path
) -> None:
    from inference.tiny_model import build_tiny_model

    engine = LocalEngine.load(build_tiny_model(tmp_path / kind, kind), device="cpu")
    try:
        questions = ["storm", "football match tonight " * 3, "vote"]
        together = await asyncio.gather(*(engine.generate(_msgs(q), GREEDY) for q in questions))
        solo = [await engine.generate(_msgs(q), GREEDY) for q in questions]
        assert [c.text for c in together] == [c.text for c in solo]
        assert all(c.usage.completion_tokens > 0 for c in together)
        assert engine.stats.max_batch_rows > 1
    finally:
        await engine.aclose()
