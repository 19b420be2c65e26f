"""What quipfeed relies on from an OpenAI-compatible model server.

Runs unchanged against a real SGLang (`SGLANG_URL=http://gpu-box:30000 pytest tests/conformance`)
and, in CI, against `quipfeed serve-model` on a tiny random model. Assertions never depend on what
the model says, only on the protocol: a deterministic (greedy) server gives the same text twice.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."},
]


async def _greedy(
    client: AsyncOpenAI, model: str, max_tokens: int, **extra: Any
) -> tuple[str, str | None]:
    r = await client.chat.completions.create(
        model=model,
        messages=PROMPT,
        max_tokens=max_tokens,
        temperature=0,
        **extra,
    )
    return r.choices[0].message.content or "", r.choices[0].finish_reason


async def test_health_and_models_answer(server_url: str, model_name: str) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server_url}/health")).status_code == 200
        info = await http.get(f"{server_url}/get_model_info")
        assert info.status_code == 200
        assert "model_path" in info.json()
    assert model_name


async def test_streaming_sends_several_chunks_that_join_to_the_whole_reply(
    client: AsyncOpenAI, model_name: str
) -> None:
    whole, _ = await _greedy(client, model_name, 24)
    stream = await client.chat.completions.create(
        model=model_name,
        messages=PROMPT,
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    pieces: list[str] = []
    reasons: list[str] = []
    async for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole
    assert reasons in (["length"], ["stop"])


async def test_max_tokens_caps_the_reply_and_reports_length(
    client: AsyncOpenAI, model_name: str
) -> None:
    r = await client.chat.completions.create(
        model=model_name,
        messages=PROMPT,
        max_tokens=5,
        temperature=0,
    )
    assert r.usage is not None
    assert r.usage.completion_tokens <= 5
    if r.usage.completion_tokens == 5:
        assert r.choices[0].finish_reason == "length"


async def test_stop_sequence_ends_the_reply_before_it(client: AsyncOpenAI, model_name: str) -> None:
    whole, _ = await _greedy(client, model_name, 32)
    # A stop string taken from the greedy reply itself, so any deterministic model hits it.
    candidates = [m.group(0) for m in re.finditer(r"\S{2,4}", whole) if m.start() > 0]
    assert candidates, f"reply too short to pick a stop string from: {whole!r}"
    stop = candidates[len(candidates) // 2]
    text, reason = await _greedy(client, model_name, 32, stop=[stop])
    assert reason == "stop"
    assert stop not in text
    assert text == whole[: whole.find(stop)]


async def test_n_returns_that_many_choices(client: AsyncOpenAI, model_name: str) -> None:
    r = await client.chat.completions.create(
        model=model_name,
        messages=PROMPT,
        max_tokens=8,
        temperature=1.0,
        n=3,
    )
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage is not None and r.usage.completion_tokens >= 3


async def test_streaming_with_n_tags_chunks_by_choice(client: AsyncOpenAI, model_name: str) -> None:
    stream = await client.chat.completions.create(
        model=model_name,
        messages=PROMPT,
        max_tokens=6,
        temperature=1.0,
        n=2,
        stream=True,
    )
    finished: set[int] = set()
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}


async def test_json_schema_reply_parses_and_obeys_the_schema(
    client: AsyncOpenAI, model_name: str
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "enum": ["news", "sports", "weather"]},
            "urgent": {"type": "boolean"},
        },
        "required": ["topic", "urgent"],
        "additionalProperties": False,
    }
    r = await client.chat.completions.create(
        model=model_name,
        messages=[
            {"role": "user", "content": "Label this post: 'Storm warning tonight'. Reply in JSON."}
        ],
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "label", "schema": schema}},
    )
    value = json.loads(r.choices[0].message.content or "", strict=False)
    assert value["topic"] in {"news", "sports", "weather"}
    assert isinstance(value["urgent"], bool)


async def test_regex_constraint_through_extra_body(client: AsyncOpenAI, model_name: str) -> None:
    r = await client.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
        max_tokens=8,
        temperature=0,
        extra_body={"regex": "(yes|no)"},
    )
    assert r.choices[0].message.content in {"yes", "no"}


async def test_usage_counts_are_consistent_in_streams(client: AsyncOpenAI, model_name: str) -> None:
    stream = await client.chat.completions.create(
        model=model_name,
        messages=PROMPT,
        max_tokens=7,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None
    assert usage.prompt_tokens > 10
    assert 1 <= usage.completion_tokens <= 7
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_closing_a_stream_early_leaves_the_server_serving(
    client: AsyncOpenAI, model_name: str
) -> None:
    stream = await client.chat.completions.create(
        model=model_name,
        messages=PROMPT,
        max_tokens=2000,
        temperature=0,
        stream=True,
    )
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    # The server must still answer promptly: the abandoned request is not hogging it.
    r = await asyncio.wait_for(
        client.chat.completions.create(
            model=model_name, messages=PROMPT, max_tokens=4, temperature=0
        ),
        timeout=60,
    )
    assert r.choices[0].finish_reason in {"length", "stop"}


async def test_invalid_request_gets_a_4xx(server_url: str, model_name: str) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{server_url}/v1/chat/completions",
            json={"model": model_name, "messages": PROMPT, "max_tokens": -5},
            timeout=60,
        )
    assert 400 <= r.status_code < 500
