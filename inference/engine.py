"""The one seam between callers and models: the `Engine` protocol, and what is built on it."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from inference.errors import InvalidRequest, StructuredOutputError
from inference.messages import ChatMessage, Choice, Chunk, Completion, SamplingParams


@runtime_checkable
class Engine(Protocol):
    """Turns chat messages into streamed text.

    Implementations: `LocalEngine` (transformers, in process) and `OpenAIEngine` (any
    OpenAI-compatible server: SGLang, or `quipfeed serve-model`).
    """

    @property
    def model_name(self) -> str:
        """The served model's name, as `/v1/models` would list it."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream the reply as `Chunk`s (see `Chunk` for the order).

        Raises `InvalidRequest` before the first chunk for bad input, an `EngineUnavailable`
        when the model cannot serve, `StreamInterrupted` if it stops partway. Closing the iterator
        early (or cancelling its task) cancels the request upstream.
        """
        ...

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> Completion:
        """The whole reply at once (same errors as `stream`)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and memory. Idempotent."""
        ...


async def collect(chunks: AsyncIterator[Chunk]) -> Completion:
    """Gather a chunk stream into a `Completion`."""
    texts: dict[int, list[str]] = {}
    reasons: dict[int, Any] = {}
    completion = Completion(choices=[])
    async for chunk in chunks:
        if chunk.text or chunk.finish_reason is not None:
            texts.setdefault(chunk.index, []).append(chunk.text)
        if chunk.finish_reason is not None:
            reasons[chunk.index] = chunk.finish_reason
        if chunk.usage is not None:
            completion.usage = chunk.usage
        if chunk.prompt is not None:
            completion.prompt = chunk.prompt
    completion.choices = [
        Choice(index=i, text="".join(texts[i]), finish_reason=reasons.get(i)) for i in sorted(texts)
    ]
    return completion


def parse_json_reply(text: str) -> Any:
    """Parse a model's JSON reply. `strict=False` because grammar-constrained strings can carry raw
    control characters (xgrammar #800)."""
    return json.loads(text, strict=False)


def _matches_top_level(value: Any, schema: dict[str, Any]) -> bool:
    # A light check, not full JSON Schema validation: the grammar enforces structure; this
    # catches an engine that ignored the constraint or a reply cut short.
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return False
        return all(key in value for key in schema.get("required", []))
    if kind == "array":
        return isinstance(value, list)
    return True


async def generate_json(
    engine: Engine,
    messages: Sequence[ChatMessage],
    schema: dict[str, Any],
    params: SamplingParams | None = None,
) -> Any:
    """A reply parsed as JSON matching `schema`'s shape.

    First try: `params` plus the schema as a constraint. If the reply is not valid JSON (an engine
    that ignored the constraint, or `max_tokens` cut it short), one retry, constrained and greedy.
    Then `StructuredOutputError` carrying the raw text.
    """
    base = params or SamplingParams()
    attempts = [
        base.model_copy(update={"json_schema": schema, "regex": None}),
        base.model_copy(update={"json_schema": schema, "regex": None, "temperature": 0.0}),
    ]
    raw = ""
    for attempt in attempts:
        completion = await engine.generate(messages, attempt)
        raw = completion.text
        try:
            value = parse_json_reply(raw)
        except json.JSONDecodeError:
            continue
        if _matches_top_level(value, schema):
            return value
    raise StructuredOutputError(
        f"reply was not JSON matching the schema after a constrained retry: {raw[:200]!r}", raw=raw
    )


async def open_engine(settings: Any, **kwargs: Any) -> Engine:
    """The engine `quipfeed.settings.ModelSettings` asks for, ready to use.

    `url` set: an `OpenAIEngine` on it, health-checked (`EngineUnavailable` if the server is
    down). Else `path`: a `LocalEngine` loaded from that folder. Neither: `InvalidRequest`.
    `kwargs` go to the engine's constructor.
    """
    if settings.url:
        from inference.openai_engine import OpenAIEngine

        remote = OpenAIEngine.from_settings(settings, **kwargs)
        try:
            await remote.start()
        except BaseException:
            await remote.aclose()
            raise
        return remote
    if settings.path:
        from inference.local import LocalEngine

        return await LocalEngine.aload(settings.path, name=settings.name, **kwargs)
    raise InvalidRequest("no model configured: set model.url (SGLang) or model.path (local folder)")
