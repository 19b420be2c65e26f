"""The OpenAI-compatible client engine: against our own server, and against a faulty fake."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from inference.breaker import CircuitBreaker
from inference.engine import Engine, generate_json
from inference.errors import (
    CircuitOpen,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    StreamInterrupted,
    StructuredOutputError,
)
from inference.local import LocalEngine
from inference.messages import ChatMessage, SamplingParams
from inference.openai_engine import OpenAIEngine
from tests.inference.fake_openai_server import FakeServer, reply_events, stall, status, stream

MSGS = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="news?")]
GREEDY = SamplingParams(max_tokens=12, temperature=0)


def _engine(url: str, **kwargs: Any) -> OpenAIEngine:
    kwargs.setdefault("backoff", 0.01)
    return OpenAIEngine(url, **kwargs)


async def test_client_over_http_gives_the_same_greedy_text_as_the_engine_in_process(
    tiny_server_url: str, tiny_engine: LocalEngine
) -> None:
    engine = _engine(tiny_server_url)
    try:
        assert isinstance(engine, Engine)
        info = await engine.start()
        assert info.model == tiny_engine.model_name
        assert info.context_window == tiny_engine.context_window
        remote = await engine.generate(MSGS, GREEDY)
        local = await tiny_engine.generate(MSGS, GREEDY)
        assert remote.text == local.text
        assert remote.usage == local.usage
        chunks = [c async for c in engine.stream(MSGS, GREEDY)]
        assert sum(bool(c.text) for c in chunks) > 1
    finally:
        await engine.aclose()


async def test_client_n_json_and_regex_through_the_server(tiny_server_url: str) -> None:
    engine = _engine(tiny_server_url)
    try:
        await engine.start()
        many = await engine.generate(MSGS, SamplingParams(max_tokens=5, temperature=1, n=3, seed=1))
        assert [c.index for c in many.choices] == [0, 1, 2]
        schema = {
            "type": "object",
            "properties": {"topic": {"enum": ["a", "b"]}},
            "required": ["topic"],
        }
        value = await generate_json(engine, MSGS, schema, SamplingParams(max_tokens=30))
        assert value["topic"] in {"a", "b"}
        yes_no = await engine.generate(MSGS, SamplingParams(max_tokens=5, regex="(yes|no)"))
        assert yes_no.text in {"yes", "no"}
        assert "quipfeed_engine_requests" in await engine.metrics()
    finally:
        await engine.aclose()


async def test_truncation_is_reported_by_the_client(tiny_server_url: str) -> None:
    engine = _engine(tiny_server_url)
    try:
        await engine.start()
        history = [
            ChatMessage(role=r, content="news " * 100)
            for _ in range(10)
            for r in ("user", "assistant")
        ]
        c = await engine.generate([MSGS[0], *history, MSGS[1]], GREEDY)
        assert c.prompt.truncated and c.prompt.dropped_messages >= 2
    finally:
        await engine.aclose()


async def test_429_is_retried_with_backoff_then_succeeds() -> None:
    async with FakeServer([status(429), status(429), stream(reply_events("hello there"))]) as fake:
        engine = _engine(fake.url, retries=2)
        c = await engine.generate(MSGS, GREEDY)
        await engine.aclose()
    assert c.text == "hello there"
    assert len(fake.requests) == 3


async def test_persistent_503_gives_overloaded_after_the_retries() -> None:
    async with FakeServer([status(503, "queue full")]) as fake:
        engine = _engine(fake.url, retries=2)
        with pytest.raises(EngineOverloaded, match="503"):
            await engine.generate(MSGS, GREEDY)
        await engine.aclose()
    assert len(fake.requests) == 3


async def test_500_is_not_retried_and_is_unavailable() -> None:
    async with FakeServer([status(500, "boom")]) as fake:
        engine = _engine(fake.url, retries=2)
        with pytest.raises(EngineUnavailable, match="boom"):
            await engine.generate(MSGS, GREEDY)
        await engine.aclose()
    assert len(fake.requests) == 1


async def test_400_is_an_invalid_request_with_the_server_message() -> None:
    async with FakeServer([status(400, "max_tokens too large")]) as fake:
        engine = _engine(fake.url)
        with pytest.raises(InvalidRequest, match="max_tokens too large"):
            await engine.generate(MSGS, GREEDY)
        await engine.aclose()
    assert len(fake.requests) == 1


async def test_no_first_token_in_time_is_a_timeout() -> None:
    async with FakeServer([stall()]) as fake:
        engine = _engine(fake.url, retries=0, first_token_timeout=0.3)
        with pytest.raises(EngineTimeout):
            await engine.generate(MSGS, GREEDY)
        await engine.aclose()


async def test_silence_between_tokens_interrupts_the_stream_without_retry() -> None:
    async with FakeServer([stream(reply_events("one two three"), stall_after=2)]) as fake:
        engine = _engine(fake.url, retries=2, token_timeout=0.3)
        got: list[str] = []
        with pytest.raises(StreamInterrupted, match="no token"):
            async for chunk in engine.stream(MSGS, GREEDY):
                got.append(chunk.text)
        await engine.aclose()
    assert "".join(got) == "one two"
    assert len(fake.requests) == 1


async def test_stream_cut_halfway_is_interrupted_and_keeps_what_arrived() -> None:
    async with FakeServer([stream(reply_events("alpha beta gamma delta"), cut_after=2)]) as fake:
        engine = _engine(fake.url, retries=2)
        got: list[str] = []
        with pytest.raises(StreamInterrupted):
            async for chunk in engine.stream(MSGS, GREEDY):
                got.append(chunk.text)
        await engine.aclose()
    assert "".join(got) == "alpha beta"
    assert len(fake.requests) == 1


async def test_stream_that_ends_without_finishing_is_interrupted() -> None:
    events = reply_events("a b")[:2]  # no finish chunk, but a clean [DONE]
    async with FakeServer([stream(events)]) as fake:
        engine = _engine(fake.url)
        with pytest.raises(StreamInterrupted, match="0 of 1"):
            await engine.generate(MSGS, GREEDY)
        await engine.aclose()


async def test_server_down_is_a_clear_unavailable_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = _engine(f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        await engine.generate(MSGS, GREEDY)
    with pytest.raises(EngineUnavailable):
        await engine.start()
    await engine.aclose()


async def test_open_breaker_fails_fast_without_calling_the_server() -> None:
    async with FakeServer([status(503)]) as fake:
        engine = _engine(
            fake.url, retries=0, breaker=CircuitBreaker(failure_threshold=2, reset_after=60)
        )
        for _ in range(2):
            with pytest.raises(EngineOverloaded):
                await engine.generate(MSGS, GREEDY)
        with pytest.raises(CircuitOpen):
            await engine.generate(MSGS, GREEDY)
        await engine.aclose()
    assert len(fake.requests) == 2


async def test_leaving_a_stream_closes_the_upstream_connection() -> None:
    words = " ".join(f"w{i}" for i in range(200))
    async with FakeServer([stream(reply_events(words), delay=0.02)]) as fake:
        engine = _engine(fake.url)
        chunks = engine.stream(MSGS, GREEDY)
        async for _ in chunks:
            break
        await chunks.aclose()
        await asyncio.wait_for(fake.disconnected.wait(), 3)
        await engine.aclose()


async def test_json_reply_is_retried_once_constrained_then_accepted() -> None:
    ok = '{"topic": "news"}'
    async with FakeServer([stream(reply_events("not json")), stream(reply_events(ok))]) as fake:
        engine = _engine(fake.url)
        value = await generate_json(engine, MSGS, {"type": "object", "required": ["topic"]})
        await engine.aclose()
    assert value == {"topic": "news"}
    assert len(fake.requests) == 2
    assert all(r["response_format"]["type"] == "json_schema" for r in fake.requests)
    assert fake.requests[1]["temperature"] == 0


async def test_json_reply_that_stays_invalid_is_a_clear_error() -> None:
    async with FakeServer([stream(reply_events("still not json"))]) as fake:
        engine = _engine(fake.url)
        with pytest.raises(StructuredOutputError) as err:
            await generate_json(engine, MSGS, {"type": "object"})
        await engine.aclose()
    assert err.value.raw == "still not json"
    assert len(fake.requests) == 2


async def test_request_carries_sglang_extensions() -> None:
    async with FakeServer([stream(reply_events("yes"))]) as fake:
        engine = _engine(fake.url, model="m")
        await engine.generate(MSGS, SamplingParams(regex="(yes|no)", n=1, stop=("\n",), seed=5))
        await engine.aclose()
    sent = fake.requests[0]
    assert sent["regex"] == "(yes|no)" and sent["stop"] == ["\n"] and sent["seed"] == 5
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_open_engine_picks_the_engine_the_settings_ask_for(
    tiny_server_url: str, tiny_model_path: Path
) -> None:
    from inference.engine import open_engine
    from inference.local import LocalEngine
    from quipfeed.settings import ModelSettings

    remote = await open_engine(ModelSettings(url=tiny_server_url))
    assert isinstance(remote, OpenAIEngine) and remote.model_name == "tiny-moe"
    await remote.aclose()
    local = await open_engine(ModelSettings(path=str(tiny_model_path), name="mine"))
    assert isinstance(local, LocalEngine) and local.model_name == "mine"
    await local.aclose()
    with pytest.raises(InvalidRequest, match=r"model\.url"):
        await open_engine(ModelSettings())
