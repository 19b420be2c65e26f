"""The data an engine takes and gives: chat messages, sampling parameters, chunks, completions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inference.errors import InvalidRequest

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]


class ChatMessage(BaseModel):
    """One chat message. `content` is data, never instructions to this package."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class SamplingParams(BaseModel):
    """How to sample. Defaults suit a chat reply; `temperature=0` is greedy.

    `json_schema` or `regex` (at most one) constrains the output; engines enforce it with a grammar
    (SGLang's `response_format`/`regex`, xgrammar locally).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=256, ge=1, le=32_768)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: tuple[str, ...] = Field(default=(), max_length=8)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    json_schema: dict[str, Any] | None = None
    regex: str | None = Field(default=None, min_length=1, max_length=10_000)

    @field_validator("stop")
    @classmethod
    def _stops_non_empty(cls, stop: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in stop):
            raise ValueError("stop sequences must be non-empty")
        return stop

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as e:
                raise ValueError(f"invalid regex: {e}") from e
        return regex

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingParams:
        if self.json_schema is not None and self.regex is not None:
            raise ValueError("give json_schema or regex, not both")
        return self

    @classmethod
    def checked(cls, **kwargs: Any) -> SamplingParams:
        """Build params, turning a validation failure into `InvalidRequest`."""
        from pydantic import ValidationError

        try:
            return cls(**kwargs)
        except ValidationError as e:
            raise InvalidRequest(f"invalid sampling parameters: {e}") from e


class Usage(BaseModel):
    """Token counts for one request (all `n` choices together). `cached_tokens` counts prompt
    tokens whose KV state was reused rather than recomputed (0 where the engine does not say)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PromptReport(BaseModel):
    """What the engine did to the prompt before running it."""

    truncated: bool = False
    dropped_messages: int = Field(default=0, description="History messages dropped to fit.")


class Chunk(BaseModel):
    """A piece of a streamed reply.

    Text chunks carry `index` (which of the `n` choices) and `text`. Each choice ends with one
    chunk whose `finish_reason` is set. The stream's last chunk carries `usage` (and `prompt`),
    with empty text.
    """

    index: int = 0
    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    prompt: PromptReport | None = None


class Choice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None


class Completion(BaseModel):
    """A whole reply: one `Choice` per `n`, plus usage and what was done to the prompt."""

    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    prompt: PromptReport = Field(default_factory=PromptReport)

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text if self.choices else ""


def check_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Messages as a list, or `InvalidRequest` if there are none or only system messages."""
    msgs = list(messages)
    if not msgs:
        raise InvalidRequest("messages must not be empty")
    if not any(m.role != "system" for m in msgs):
        raise InvalidRequest("messages need at least one user message")
    return msgs
