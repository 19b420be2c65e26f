"""The model server fails during a chat turn: `bot.chat.Chat` over the real `OpenAIEngine`,
pointed at a scripted OpenAI-compatible server on 127.0.0.1 that stalls, answers 500/429 or cuts
its stream halfway. The person gets a clear message, nothing half-finished is stored as an
answer, and asking again on the same conversation works."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bot.chat import Chat, ChatConfig, Delta, Done
from bot.discord.answers import error_message
from bot.persona import Persona
from bot.search import LocalSearch
from inference.errors import (
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InferenceError,
    StreamInterrupted,
)
from inference.openai_engine import OpenAIEngine
from tests.bot.conftest import AS_OF
from tests.inference.fake_openai_server import (
    Action,
    FakeServer,
    reply_events,
    stall,
    status,
    stream,
)

QUESTION = "What are people saying about the weather?"
GOOD = "Storms everywhere, apparently [1]."


async def engine_for(fake: FakeServer) -> AsyncIterator[OpenAIEngine]:
    engine = OpenAIEngine(
        fake.url,
        model="fake",
        first_token_timeout=1.0,
        token_timeout=1.0,
        retries=2,
        backoff=0.01,
    )
    try:
        yield engine
    finally:
        await engine.aclose()


async def turn(chat: Chat, cid: str) -> tuple[list[str], Done | None, InferenceError | None]:
    shown: list[str] = []
    done: Done | None = None
    try:
        async for event in chat.ask(cid, "alice", QUESTION, as_of=AS_OF):
            if isinstance(event, Delta):
                shown.append(event.text)
            elif isinstance(event, Done):
                done = event
    except InferenceError as exc:
        return shown, done, exc
    return shown, done, None


@pytest.mark.parametrize(
    ("fault", "expected", "advice"),
    [
        (status(500, "boom"), EngineUnavailable, "model is down"),
        (status(429, "slow down"), EngineOverloaded, "model is busy"),
        (stall(), EngineTimeout, "model is down"),
        (
            stream(reply_events("Half an answer that never ends"), cut_after=3),
            StreamInterrupted,
            "stopped partway",
        ),
        (
            stream(reply_events("Words then silence here"), stall_after=2),
            StreamInterrupted,
            "stopped partway",
        ),
    ],
    ids=["500", "429", "stall-before-first-token", "cut-halfway", "stall-mid-stream"],
)
async def test_model_fault_mid_turn_stores_nothing_half_done_and_a_retry_works(
    redis_client: aioredis.Redis,
    feed: LocalSearch,
    personas: dict[str, Persona],
    fault: Action,
    expected: type[InferenceError],
    advice: str,
) -> None:
    # 429 and a silent first token are retried by the engine (retries=2): script the fault for
    # every attempt, then the good reply.
    faults = [fault] * 3 if expected in (EngineOverloaded, EngineTimeout) else [fault]
    async with FakeServer([*faults, stream(reply_events(GOOD))]) as fake:
        async for engine in engine_for(fake):
            chat = Chat(
                redis_client,
                engine,
                feed,
                personas,
                ChatConfig(suggestions=False, max_reply_tokens=24),
            )
            info = await chat.new_conversation("alice")

            shown, done, error = await turn(chat, info.id)
            assert isinstance(error, expected), error
            assert done is None
            if expected is StreamInterrupted:
                assert shown, "the cut must land after some text was shown"
            assert len(fake.requests) == len(faults)
            message = error_message(error)
            assert advice in message and "Traceback" not in message
            # Nothing of the failed turn is stored: no half answer kept as if complete.
            assert await chat.store.messages(info.id) == {}
            assert await chat.path(info.id, "alice") == []

            shown, done, error = await turn(chat, info.id)
            assert error is None
            assert done is not None
            assert done.result.text.startswith("Storms everywhere, apparently")
            assert "".join(shown).startswith("Storms everywhere")
            line = await chat.path(info.id, "alice")
            assert [m.role for m in line] == ["user", "assistant"]
            assert line[0].content == QUESTION
            assert line[1].raw == GOOD
            assert len(await chat.store.messages(info.id)) == 2
