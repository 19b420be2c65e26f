"""An OpenAI-compatible HTTP server over any `Engine` (what `quipfeed serve-model` runs).

Speaks the subset of the API quipfeed and ordinary OpenAI clients use — `/v1/chat/completions`
(JSON or SSE streaming), `/v1/models` — plus SGLang's extensions (`regex`, `json_schema`
response formats, `usage.prompt_tokens_details.cached_tokens`) and the endpoints SGLang's Model
Gateway (`smg`) and the older `sglang-router` probe (`/health`, `/health_generate`,
`/server_info`, `/get_server_info`, `/model_info`, `/get_model_info`, `/v1/models`, the load
report `/v1/loads`) and SGLang's `/get_load`, so the same gateway, clients and conformance suite
work against it and SGLang.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from inference.engine import Engine
from inference.errors import (
    EngineOverloaded,
    EngineUnavailable,
    InferenceError,
    InvalidRequest,
)
from inference.messages import ChatMessage, Chunk, SamplingParams
from inference.request_id import RequestIdMiddleware

SERVER_VERSION = "quipfeed-local-0.1"

log = logging.getLogger(__name__)


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[_ContentPart] | None = None

    def to_message(self) -> ChatMessage:
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise InvalidRequest("only text content parts are supported")
            text = "".join(p.text or "" for p in self.content)
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=text)


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of `/v1/chat/completions`. Unknown fields are ignored, as SGLang does."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[_MessageIn] = Field(default_factory=list)
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    regex: str | None = None
    stream_options: _StreamOptions | None = None

    def sampling(self) -> SamplingParams:
        schema: dict[str, Any] | None = None
        if self.response_format is not None:
            kind = self.response_format.get("type")
            if kind == "json_schema":
                spec = self.response_format.get("json_schema") or {}
                schema = spec.get("schema") if isinstance(spec, dict) else None
                if not isinstance(schema, dict):
                    raise InvalidRequest("response_format.json_schema.schema must be an object")
            elif kind == "json_object":
                schema = {"type": "object"}
            elif kind not in (None, "text"):
                raise InvalidRequest(f"unsupported response_format type {kind!r}")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        fields: dict[str, Any] = {
            "n": self.n,
            "stop": tuple(stop),
            "seed": self.seed,
            "json_schema": schema,
            "regex": self.regex,
        }
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            fields["max_tokens"] = max_tokens
        if self.temperature is not None:
            fields["temperature"] = self.temperature
        if self.top_p is not None:
            fields["top_p"] = self.top_p
        return SamplingParams.checked(**fields)


def _error(status: int, message: str, kind: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}},
        status_code=status,
        headers=headers,
    )


def _error_for(exc: InferenceError) -> JSONResponse:
    if isinstance(exc, InvalidRequest):
        return _error(400, str(exc), "invalid_request_error")
    if isinstance(exc, EngineOverloaded):
        return _error(429, str(exc), "overloaded_error")
    if isinstance(exc, EngineUnavailable):
        return _error(503, str(exc), "unavailable_error")
    return _error(500, str(exc), "server_error")


class _EngineCollector(Collector):
    """Exports the engine's own counters (if it keeps `stats`) at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = getattr(self._engine, "stats", None)
        if stats is None:
            return
        for name in (
            "requests",
            "completed",
            "cancelled",
            "failed",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "decode_steps",
        ):
            c = CounterMetricFamily(f"quipfeed_engine_{name}", f"Engine {name.replace('_', ' ')}.")
            c.add_metric([], float(getattr(stats, name)))
            yield c
        for name in ("active_rows", "waiting", "max_batch_rows"):
            g = GaugeMetricFamily(f"quipfeed_engine_{name}", f"Engine {name.replace('_', ' ')}.")
            g.add_metric([], float(getattr(stats, name)))
            yield g


def create_app(engine: Engine, *, context_window: int | None = None) -> FastAPI:
    """A FastAPI app serving `engine`. The caller owns the engine (and closes it)."""
    app = FastAPI(title="quipfeed model server", version=SERVER_VERSION)
    # The caller's X-Request-ID (or a fresh one) is current while a request runs: every log
    # line it causes carries it, and the response echoes it.
    app.add_middleware(RequestIdMiddleware)
    registry = CollectorRegistry()
    registry.register(_EngineCollector(engine))
    http_requests = Counter(
        "quipfeed_http_chat_requests",
        "Chat completion requests by outcome.",
        ["outcome"],
        registry=registry,
    )
    ttft = Histogram(
        "quipfeed_http_time_to_first_token_seconds",
        "Time to first token.",
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    window = context_window or getattr(engine, "context_window", None)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request body: {exc.errors()}", "invalid_request_error")

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/health_generate")
    async def health_generate() -> Response:
        try:
            await engine.generate(
                [ChatMessage(role="user", content="ping")],
                SamplingParams(max_tokens=1, temperature=0),
            )
        except InferenceError as e:
            return _error_for(e)
        return Response(status_code=200)

    def model_info() -> dict[str, Any]:
        return {
            "model_path": engine.model_name,
            "tokenizer_path": engine.model_name,
            "is_generation": True,
        }

    def server_info() -> dict[str, Any]:
        return {
            "version": SERVER_VERSION,
            "context_length": window,
            "max_running_requests": getattr(engine, "max_batch_size", None),
            "model_path": engine.model_name,
        }

    for path in ("/model_info", "/get_model_info"):
        app.add_api_route(path, model_info, methods=["GET"])
    for path in ("/server_info", "/get_server_info"):
        app.add_api_route(path, server_info, methods=["GET"])

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": engine.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "quipfeed",
        }
        if window:
            card["max_model_len"] = window
        return {"object": "list", "data": [card]}

    def load_counts() -> tuple[int, int]:
        stats = getattr(engine, "stats", None)
        return int(getattr(stats, "active_rows", 0)), int(getattr(stats, "waiting", 0))

    @app.get("/get_load")
    async def get_load() -> list[dict[str, Any]]:
        # SGLang's older shape (one entry per data-parallel rank), for SGLang clients/dashboards.
        running, waiting = load_counts()
        return [
            {
                "dp_rank": 0,
                "num_reqs": running + waiting,
                "num_waiting_reqs": waiting,
                "num_tokens": None,
            }
        ]

    @app.get("/v1/loads")
    async def loads() -> dict[str, Any]:
        # SGLang's load report, which smg polls (`?include=core,...`; extra sections are
        # optional) to keep workers with a long waiting queue out of routing. `token_usage` stays
        # 0: this engine has no fixed KV pool to fill, so KV-pressure rules must not fire on it.
        running, waiting = load_counts()
        stats = getattr(engine, "stats", None)
        prompt = int(getattr(stats, "prompt_tokens", 0))
        cached = int(getattr(stats, "cached_tokens", 0))
        return {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dp_rank_count": 1,
            "loads": [
                {
                    "dp_rank": 0,
                    "num_running_reqs": running,
                    "num_waiting_reqs": waiting,
                    "num_total_reqs": running + waiting,
                    "num_used_tokens": 0,
                    "max_total_num_tokens": 0,
                    "token_usage": 0.0,
                    "gen_throughput": 0.0,
                    "cache_hit_rate": cached / prompt if prompt else 0.0,
                    "utilization": 0.0,
                    "max_running_requests": int(getattr(engine, "max_batch_size", 0) or 0),
                }
            ],
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(registry).decode(), media_type="text/plain; version=0.0.4"
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> Response | EventSourceResponse:
        started = time.perf_counter()
        first_token_s: float | None = None

        def finish(outcome: str) -> None:
            http_requests.labels(outcome=outcome).inc()
            log.info(
                "chat completion",
                extra={
                    "outcome": outcome,
                    "stream": body.stream,
                    "messages": len(body.messages),
                    "ttft_ms": None if first_token_s is None else round(first_token_s * 1000, 1),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )

        try:
            messages = [m.to_message() for m in body.messages]
            params = body.sampling()
            chunks = engine.stream(messages, params)
            # Pull the first chunk before answering, so bad input gets a 4xx, not a broken stream.
            first = await anext(chunks)
        except InferenceError as e:
            finish(type(e).__name__)
            return _error_for(e)
        except StopAsyncIteration:
            finish("empty")
            return _error(500, "engine produced no output", "server_error")
        first_token_s = time.perf_counter() - started
        ttft.observe(first_token_s)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = body.model or engine.model_name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(
                _sse(chunks, first, rid, created, name, include_usage, finish),
                sep="\n",
                ping=15,
            )
        return await _whole(chunks, first, rid, created, name, finish)

    return app


def _usage_json(chunk: Chunk) -> dict[str, Any]:
    assert chunk.usage is not None
    u = chunk.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def _metadata_json(chunk: Chunk) -> dict[str, Any]:
    return chunk.prompt.model_dump() if chunk.prompt is not None else {}


async def _all(first: Chunk, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    yield first
    async for chunk in chunks:
        yield chunk


async def _sse(
    chunks: AsyncGenerator[Chunk, None],
    first: Chunk,
    rid: str,
    created: int,
    model: str,
    include_usage: bool,
    finish: Callable[[str], None],
) -> AsyncIterator[dict[str, str]]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> dict[str, str]:
        payload = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return {"data": json.dumps(payload)}

    started: set[int] = set()
    outcome = "cancelled"
    try:
        async for chunk in _all(first, chunks):
            if chunk.usage is not None:
                if include_usage:
                    yield event([], usage=_usage_json(chunk), metadata=_metadata_json(chunk))
                continue
            delta: dict[str, Any] = {}
            if chunk.index not in started:
                started.add(chunk.index)
                delta["role"] = "assistant"
            if chunk.text:
                delta["content"] = chunk.text
            if not delta and chunk.finish_reason is None:
                continue
            yield event(
                [
                    {
                        "index": chunk.index,
                        "delta": delta,
                        "finish_reason": chunk.finish_reason,
                        "logprobs": None,
                    }
                ]
            )
        yield {"data": "[DONE]"}
        outcome = "ok"
    except InferenceError as e:
        # Headers are gone; SGLang reports a mid-stream failure as an error event, then stops.
        outcome = type(e).__name__
        yield {
            "data": json.dumps({"error": {"message": str(e), "type": "server_error", "code": 500}})
        }
    finally:
        finish(outcome)
        # Closing the engine's stream cancels the request there (the client went away).
        await chunks.aclose()


async def _whole(
    chunks: AsyncGenerator[Chunk, None],
    first: Chunk,
    rid: str,
    created: int,
    model: str,
    finish: Callable[[str], None],
) -> Response:
    texts: dict[int, list[str]] = {}
    reasons: dict[int, str | None] = {}
    final: Chunk | None = None
    try:
        async for chunk in _all(first, chunks):
            if chunk.usage is not None:
                final = chunk
                continue
            texts.setdefault(chunk.index, []).append(chunk.text)
            if chunk.finish_reason is not None:
                reasons[chunk.index] = chunk.finish_reason
    except InferenceError as e:
        finish(type(e).__name__)
        return _error_for(e)
    finish("ok")
    body: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": "".join(texts[i])},
                "finish_reason": reasons.get(i),
                "logprobs": None,
            }
            for i in sorted(texts)
        ],
    }
    if final is not None:
        body["usage"] = _usage_json(final)
        body["metadata"] = _metadata_json(final)
    return JSONResponse(body)
