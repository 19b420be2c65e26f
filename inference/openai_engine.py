"""An `Engine` over any OpenAI-compatible server: SGLang in production, `quipfeed serve-model`
locally. Uses SGLang's extensions where they pay (`regex`, `json_schema`, `n` sharing one
prefill, `cached_tokens` in usage, `/health`, `/get_model_info`, `/metrics`).

Failure policy:
- Before the first chunk, a request is retried (exponential backoff with jitter) on connection
  errors, timeouts, 429, 502, 503 and 504. Generating is side-effect free until text has reached
  the caller, so such a retry is idempotent; after the first chunk nothing is retried.
- Timeouts: `connect_timeout` to open a connection, `first_token_timeout` until the first chunk,
  `token_timeout` between chunks.
- A `CircuitBreaker` counts failures; while open, calls fail at once with `CircuitOpen`.
- Closing the iterator, or cancelling the task reading it, closes the HTTP response, which
  aborts the request on the server.
- The current turn's request id (`inference.request_id`) goes with each completion request as
  `X-Request-ID`, so the server's logs can be joined with the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from inference import request_id
from inference.breaker import CircuitBreaker
from inference.engine import collect
from inference.errors import (
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InferenceError,
    InvalidRequest,
    StreamInterrupted,
)
from inference.layout import fit_to_window
from inference.messages import (
    ChatMessage,
    Chunk,
    Completion,
    FinishReason,
    PromptReport,
    SamplingParams,
    Usage,
    check_messages,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 502, 503, 504})


def _transport_errors() -> tuple[type[Exception], ...]:
    # openai >= 3 runs on `httpx2` and lets its transport errors escape mid-stream; older
    # releases use `httpx`. Catch whichever is installed.
    errors: list[type[Exception]] = [httpx.HTTPError]
    try:
        errors.append(importlib.import_module("httpx2").HTTPError)
    except ImportError:
        pass
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_errors()
_OPEN_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError,
    *_TRANSPORT_ERRORS,
    ValueError,
)
_STREAM_ERRORS: tuple[type[Exception], ...] = (openai.APIError, *_TRANSPORT_ERRORS, ValueError)


@dataclass(frozen=True)
class ServerInfo:
    """What `start()` learned about the server."""

    model: str
    context_window: int | None
    model_info: dict[str, Any]


def _estimated_tokens(messages: Sequence[ChatMessage]) -> int:
    # Without the server's tokenizer, bound from above: a byte-level BPE token covers at least one
    # byte, and a chat template adds a handful of tokens per message.
    return sum(len(m.content.encode()) + 8 for m in messages) + 8


class OpenAIEngine:
    """An `Engine` speaking the OpenAI chat completions API to `base_url` (no `/v1` suffix)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 60.0,
        token_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.25,
        breaker: CircuitBreaker | None = None,
        context_window: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self._model = model
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.retries = retries
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        self.context_window = context_window
        # No read timeout: the first/between-token limits are enforced around each chunk.
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(connect=connect_timeout, read=None, write=30.0, pool=None),
        )
        self._client = openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=api_key or "none",
            max_retries=0,  # retries are ours: only before the first chunk
            timeout=openai.Timeout(connect=connect_timeout, read=None, write=30.0, pool=None),
        )

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> OpenAIEngine:
        """From `quipfeed.settings.ModelSettings` (`url`, `name`, `api_key`)."""
        if not settings.url:
            raise InvalidRequest("model.url is not set")
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        return cls(settings.url, model=settings.name, api_key=key, **kwargs)

    @property
    def model_name(self) -> str:
        return self._model or "default"

    # ---- server probes (idempotent GETs, retried) -------------------------------------------

    async def _get(self, path: str) -> httpx.Response:
        """GET `path`, retrying connection errors and 429/502/503/504; the last answer is
        returned even when it is one of those (callers judge it). Unreachable after the
        retries: `EngineUnavailable` saying what to do."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.get(path, timeout=self.first_token_timeout)
            except httpx.HTTPError as e:
                last = e
            else:
                if response.status_code not in _RETRY_STATUS or attempt == self.retries:
                    return response
            if attempt < self.retries:
                await self._sleep(attempt)
        raise EngineUnavailable(
            f"cannot reach the model server at {self.base_url} ({last or 'no answer'}): start it "
            "(`quipfeed serve-model`, SGLang or smg) or point model.url / --model-url at it"
        )

    def _no_worker(self, detail: str) -> EngineUnavailable:
        if "for model" in detail:  # smg routes by model name: a name no worker serves
            return EngineUnavailable(
                f"the model gateway at {self.base_url} has no healthy worker for model "
                f"{self.model_name!r} ({detail}): start its workers, or set model.name to a "
                f"model listed at GET {self.base_url}/v1/models"
            )
        return EngineUnavailable(
            f"the model gateway at {self.base_url} has no healthy worker ({detail}): start its "
            f"workers, or see which it knows with GET {self.base_url}/workers"
        )

    def _refusal(self, path: str, response: httpx.Response) -> EngineUnavailable:
        detail = _body_message(response)
        if _says_no_worker(response.status_code, detail, _body_code(response)):
            return self._no_worker(detail)
        return EngineUnavailable(
            f"model server at {self.base_url} answered {path} with {response.status_code}"
            + (f" ({detail})" if detail else "")
        )

    async def health(self) -> bool:
        """True if `/health` answers 200."""
        try:
            return (await self._get("/health")).status_code == 200
        except EngineUnavailable:
            return False

    async def start(self) -> ServerInfo:
        """Check the server is up (`/health`), learn the model (`/get_model_info`, `/v1/models`)
        and its context window (`/v1/models`' `max_model_len`, else `/get_server_info`'s
        `context_length`: smg's own model list omits it). Raises `EngineUnavailable` saying what
        to do if the server is down, or is a gateway with no healthy worker."""
        health = await self._get("/health")
        if health.status_code != 200:
            raise self._refusal("/health", health)
        info: dict[str, Any] = {}
        # A gateway (smg) answers /health itself; these reach a worker, so a gateway without
        # one answers 503 here.
        response = await self._get("/get_model_info")
        if response.status_code == 200:
            info = response.json()
        elif response.status_code in _RETRY_STATUS:
            raise self._refusal("/get_model_info", response)
        response = await self._get("/v1/models")
        if response.status_code == 200:
            cards = response.json().get("data") or []
            if cards:
                if self._model is None:
                    self._model = str(cards[0].get("id"))
                window = cards[0].get("max_model_len")
                if self.context_window is None and isinstance(window, int):
                    self.context_window = window
        elif response.status_code in _RETRY_STATUS:
            raise self._refusal("/v1/models", response)
        if self.context_window is None:
            response = await self._get("/get_server_info")
            window = None
            if response.status_code == 200:
                with contextlib.suppress(ValueError, AttributeError):
                    window = response.json().get("context_length")
            if isinstance(window, int) and window > 0:
                self.context_window = window
        if self._model is None and info.get("model_path"):
            self._model = str(info["model_path"])
        return ServerInfo(
            model=self.model_name, context_window=self.context_window, model_info=info
        )

    async def metrics(self) -> str:
        """The server's Prometheus `/metrics` text, passed through."""
        response = await self._get("/metrics")
        if response.status_code != 200:
            raise self._refusal("/metrics", response)
        return response.text

    # ---- the Engine protocol ------------------------------------------------------------------

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> Completion:
        return await collect(self.stream(messages, params))

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> AsyncGenerator[Chunk, None]:
        params = params or SamplingParams()
        msgs, report = self._fit(check_messages(messages), params)
        request = self._request(msgs, params)
        stream, first = await self._open(request)
        finished: set[int] = set()
        usage: Usage | None = None
        verdict = False
        try:
            chunk: Any = first
            while chunk is not None:
                for out in self._chunks(chunk):
                    if out.finish_reason is not None:
                        finished.add(out.index)
                    yield out
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
                    report = _merge_report(report, chunk)
                chunk = await self._next(stream)
            if len(finished) < params.n:
                raise StreamInterrupted(
                    f"stream ended after {len(finished)} of {params.n} choices finished"
                )
            self.breaker.record_success()
            verdict = True
            yield Chunk(usage=usage or Usage(), prompt=report)
        except StreamInterrupted:
            self.breaker.record_failure()
            verdict = True
            raise
        finally:
            if not verdict:
                self.breaker.release()
            await stream.close()

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    # ---- internals ----------------------------------------------------------------------------

    def _fit(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> tuple[list[ChatMessage], PromptReport]:
        if self.context_window is None:
            return messages, PromptReport()
        reserve = min(params.max_tokens, self.context_window // 2)
        return fit_to_window(messages, _estimated_tokens, self.context_window - reserve)

    def _request(self, messages: list[ChatMessage], params: SamplingParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": [m.model_dump() for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        if params.seed is not None:
            request["seed"] = params.seed
        if params.json_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": params.json_schema},
            }
        if params.regex is not None:
            request["extra_body"] = {"regex": params.regex}  # SGLang extension
        return request

    async def _sleep(self, attempt: int, retry_after: float | None = None) -> None:
        delay = self.backoff * (2**attempt) * (0.5 + random.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, 10.0))
        await asyncio.sleep(delay)

    async def _open(self, request: dict[str, Any]) -> tuple[_EventStream, dict[str, Any]]:
        """Open the stream and read its first event, retrying what is safe to retry."""
        last: InferenceError | None = None
        for attempt in range(self.retries + 1):
            self.breaker.before_call()
            stream: _EventStream | None = None
            retry_after: float | None = None
            try:
                # The raw streaming response: the openai client still builds the request, maps
                # error statuses and authenticates, but events are parsed here as plain JSON —
                # its per-chunk pydantic models cost ~5x the rest of the client path.
                rid = request_id.current()
                context = self._client.chat.completions.with_streaming_response.create(
                    **request, extra_headers={request_id.HEADER: rid} if rid else None
                )
                stream = _EventStream(context)
                async with asyncio.timeout(self.first_token_timeout):
                    await stream.open()
                    first = await stream.next()
                if first is None:
                    raise StopAsyncIteration
                return stream, first
            except StopAsyncIteration:
                last = StreamInterrupted("server closed the stream before any output")
            except TimeoutError:
                last = EngineTimeout(f"no first token within {self.first_token_timeout}s")
            except openai.APIStatusError as e:
                if _says_no_worker(e.status_code, _message(e), _code(e)):
                    # A gateway with no worker for the model (smg answers 404 or 503): not the
                    # request's fault, and what to do is on the operator's side.
                    last = self._no_worker(_message(e))
                elif e.status_code not in _RETRY_STATUS:
                    self.breaker.release()
                    if 400 <= e.status_code < 500:
                        raise InvalidRequest(f"server rejected the request: {_message(e)}") from e
                    self.breaker.record_failure()
                    raise EngineUnavailable(f"server error {e.status_code}: {_message(e)}") from e
                else:
                    header = e.response.headers.get("retry-after")
                    retry_after = float(header) if header and header.isdigit() else None
                    kind = EngineOverloaded if e.status_code in (429, 503) else EngineUnavailable
                    last = kind(f"server answered {e.status_code}: {_message(e)}")
            except _ErrorEvent as e:  # an error event as the first SSE message
                last = EngineUnavailable(f"server error: {e}")
            except _OPEN_ERRORS as e:
                last = EngineUnavailable(f"cannot reach model server at {self.base_url}: {e}")
            except ValueError as e:  # a first event that is not a JSON object
                last = EngineUnavailable(f"model server sent a malformed stream: {e}")
            except BaseException:
                self.breaker.release()
                if stream is not None:
                    await stream.close()
                raise
            if stream is not None:
                await stream.close()
            self.breaker.record_failure()
            if attempt < self.retries:
                log.warning(
                    "model request failed; retrying",
                    extra={"attempt": attempt + 1, "error": str(last)},
                )
                await self._sleep(attempt, retry_after)
        assert last is not None
        raise last

    async def _next(self, stream: _EventStream) -> dict[str, Any] | None:
        try:
            # `asyncio.timeout`, not `wait_for`: no extra task per chunk on the hot path.
            async with asyncio.timeout(self.token_timeout):
                return await stream.next()
        except TimeoutError as e:
            raise StreamInterrupted(f"no token for {self.token_timeout}s; stream abandoned") from e
        except _ErrorEvent as e:
            raise StreamInterrupted(f"server error mid-stream: {e}") from e
        except _STREAM_ERRORS as e:
            raise StreamInterrupted(f"stream cut partway: {e}") from e

    def _chunks(self, event: dict[str, Any]) -> list[Chunk]:
        out: list[Chunk] = []
        for choice in event.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or ""
            reason = _finish_reason(choice.get("finish_reason"))
            if text or reason is not None:
                out.append(Chunk(index=choice.get("index", 0), text=text, finish_reason=reason))
        return out


class _ErrorEvent(Exception):
    """The server sent an `{"error": ...}` event instead of a chunk."""


class _EventStream:
    """Server-sent events of one chat completion, as parsed JSON objects."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lines: AsyncIterator[str] | None = None
        self._entered = False

    async def open(self) -> None:
        response = await self._context.__aenter__()
        self._entered = True
        self._lines = response.iter_lines()

    async def next(self) -> dict[str, Any] | None:
        """The next event, or None at `[DONE]` or the end of the body."""
        assert self._lines is not None
        async for line in self._lines:
            if not line.startswith("data:"):
                continue  # comments (pings), blank separators, other fields
            data = line[5:].strip()
            if data == "[DONE]":
                return None
            event = json.loads(data)
            if not isinstance(event, dict):
                raise ValueError(f"unexpected event {data[:100]!r}")
            if "error" in event and not event.get("choices"):
                error = event["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise _ErrorEvent(str(message))
            return event
        return None

    async def close(self) -> None:
        if self._entered:
            self._entered = False
            with contextlib.suppress(Exception):
                await self._context.__aexit__(None, None, None)


def _finish_reason(value: str | None) -> FinishReason | None:
    if value is None:
        return None
    if value == "length":
        return "length"
    if value == "abort":
        raise StreamInterrupted("server aborted the request")
    return "stop"


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=details.get("cached_tokens") or 0,
    )


def _merge_report(report: PromptReport, event: dict[str, Any]) -> PromptReport:
    # `quipfeed serve-model` says in the usage chunk what it cut; SGLang says nothing.
    server = event.get("metadata") or {}
    if not server.get("truncated"):
        return report
    return PromptReport(
        truncated=True,
        dropped_messages=report.dropped_messages + int(server.get("dropped_messages", 0)),
    )


# What smg answers when no worker can take a request: 503 `no_workers` / `no_models_available`
# (probes), 404 `model_not_found` "No worker available for model …" (completions).
_NO_WORKER_CODES = frozenset({"no_workers", "no_models_available", "no_available_workers"})


def _says_no_worker(status: int, message: str, code: object) -> bool:
    if status not in (404, 503):
        return False
    return code in _NO_WORKER_CODES or "no worker" in message.lower()


def _body_error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    inner = body.get("error", body) if isinstance(body, dict) else None
    return inner if isinstance(inner, dict) else {}


def _body_message(response: httpx.Response) -> str:
    return str(_body_error(response).get("message") or response.text[:200]).strip()


def _body_code(response: httpx.Response) -> object:
    return _body_error(response).get("code")


def _code(e: openai.APIStatusError) -> object:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("code")
    return None


def _message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(e.message)
