"""An OpenAI-compatible `/v1/chat/completions` over a persona, so OpenAI clients can talk to
quipfeed: `model` names the persona, the last user message is the question, earlier messages
are history, system messages are ignored (the persona is the system prompt). Replies carry
the cited posts in an extra `quipfeed_citations` field that OpenAI clients ignore.
"""

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.web.limits import RateLimiter
from bot.web.metrics import WebMetrics
from bot.web.service import (
    BadInput,
    ChatService,
    Citations,
    Done,
    Limited,
    Notice,
    Suggestions,
    Token,
    TurnEvent,
)
from bot.web.sessions import Identity


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | None = Field(default=None, max_length=20_000)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # temperature, top_p … belong to the persona

    model: str = Field(min_length=1, max_length=64, description="A persona name, e.g. `quip`.")
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=100)
    stream: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "quipfeed"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def _persona_of(model: str) -> str:
    # "quipfeed/quip" and "quip" both name the persona `quip`.
    return model.split("/", 1)[1] if model.startswith("quipfeed/") else model


def add_openai_routes(
    app: FastAPI,
    service: ChatService,
    identity: Callable[..., Any],
    turns: RateLimiter,
    metrics: WebMetrics,
) -> None:
    Who = Annotated[Identity, Depends(identity)]

    @app.get(
        "/v1/models",
        response_model=ModelList,
        tags=["openai"],
        summary="Personas, listed as OpenAI models.",
    )
    async def models(who: Who) -> ModelList:
        return ModelList(data=[ModelCard(id=p.name) for p in await service.personas()])

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        responses={"200": {"content": {"text/event-stream": {}}}},
        summary="OpenAI-compatible chat completion, answered by a persona.",
    )
    async def completions(who: Who, body: ChatCompletionRequest) -> Any:
        wait = turns.allow(who.owner)
        if wait:
            raise Limited("too many questions; wait a moment", wait)
        turns_ = [
            (m.role, m.content or "") for m in body.messages if m.role in ("user", "assistant")
        ]
        if not turns_ or turns_[-1][0] != "user" or not turns_[-1][1].strip():
            raise BadInput("the last message must be a non-empty user message")
        persona = _persona_of(body.model)
        known = {p.name for p in await service.personas()}
        if persona not in known:
            return JSONResponse(
                {
                    "error": {
                        "message": f"model {body.model!r} does not exist; "
                        f"use one of: {', '.join(sorted(known))}",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                404,
            )
        events = metrics.watch(await service.answer(persona, turns_[:-1], turns_[-1][1]), "openai")
        cid = "chatcmpl-" + secrets.token_urlsafe(12)
        created = int(time.time())
        if body.stream:
            first = await anext(aiter(events), None)  # errors answer as HTTP errors, not a stream
            return StreamingResponse(
                metrics.stream(_sse(cid, created, body.model, first, events)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store"},
            )
        text, citations, finish = [], [], "stop"
        notices: list[str] = []
        async for event in events:
            if isinstance(event, Notice):
                notices.append(event.text)
            elif isinstance(event, Token):
                text.append(event.text)
            elif isinstance(event, Citations):
                citations = [c.model_dump(mode="json") for c in event.cards]
            elif isinstance(event, Done):
                finish = event.finish_reason
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": "".join(text)},
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "quipfeed_citations": citations,
            "quipfeed_notices": notices,
        }


async def _sse(
    cid: str, created: int, model: str, first: TurnEvent | None, events: AsyncIterator[TurnEvent]
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    citations: list[dict[str, Any]] = []
    notices: list[str] = []

    async def all_events() -> AsyncIterator[TurnEvent]:
        if first is not None:
            yield first
            async for e in events:
                yield e

    async for event in all_events():
        if isinstance(event, Notice):
            notices.append(event.text)
        elif isinstance(event, Token):
            yield chunk({"content": event.text})
        elif isinstance(event, Citations):
            citations = [c.model_dump(mode="json") for c in event.cards]
        elif isinstance(event, Suggestions):
            continue
        elif isinstance(event, Done):
            yield chunk({}, "stop", quipfeed_citations=citations, quipfeed_notices=notices)
    yield "data: [DONE]\n\n"
