"""An `Engine` that replies with scripted text, for tests that need a known reply (citation
markers, mentions) — the tiny model's text is random. It speaks the protocol faithfully: text
chunks, one finishing chunk, a final usage chunk; `json_schema` requests get JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from inference.engine import collect
from inference.messages import ChatMessage, Chunk, Completion, SamplingParams, Usage


class ScriptedEngine:
    def __init__(self, replies: Sequence[str] = ("ok",), *, delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.delay = delay
        self.prompts: list[list[ChatMessage]] = []
        self.gate: asyncio.Event | None = None
        self._turn = 0

    @property
    def model_name(self) -> str:
        return "scripted"

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> AsyncIterator[Chunk]:
        params = params or SamplingParams()
        if params.json_schema is not None:
            text = json.dumps({"questions": ["What happened next?", "Who said it first?"]})
        else:
            self.prompts.append(list(messages))
            text = self.replies[min(self._turn, len(self.replies) - 1)]
            self._turn += 1
        words = text.split(" ")
        for i, word in enumerate(words):
            if self.gate is not None and i == 2:  # after "word word" shows "word "
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            yield Chunk(text=word if i == 0 else " " + word)
        yield Chunk(finish_reason="stop")
        yield Chunk(
            usage=Usage(
                prompt_tokens=sum(len(m.content) for m in messages) // 4,
                completion_tokens=len(words),
            )
        )

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> Completion:
        return await collect(self.stream(messages, params))

    async def aclose(self) -> None:
        return None
