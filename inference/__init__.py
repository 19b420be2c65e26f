"""Turns chat messages into streamed tokens. Knows nothing of posts or personas.

One seam, `Engine` (`stream`, `generate`, `aclose`), two implementations:
`OpenAIEngine` (SGLang or any OpenAI-compatible server over HTTP) and `LocalEngine`
(transformers in process). Both are imported lazily: torch and the OpenAI client take seconds
to import, which `inference.request_id`'s users (every command's logging) should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inference.breaker import CircuitBreaker
from inference.engine import Engine, collect, generate_json, open_engine, parse_json_reply
from inference.errors import (
    CircuitOpen,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InferenceError,
    InvalidRequest,
    StreamInterrupted,
    StructuredOutputError,
)
from inference.layout import fit_to_window, shared_prefix_ratio, turn_messages
from inference.messages import (
    ChatMessage,
    Choice,
    Chunk,
    Completion,
    PromptReport,
    SamplingParams,
    Usage,
)

if TYPE_CHECKING:
    from inference.local import LocalEngine
    from inference.openai_engine import OpenAIEngine

__all__ = [
    "ChatMessage",
    "Choice",
    "Chunk",
    "CircuitBreaker",
    "CircuitOpen",
    "Completion",
    "Engine",
    "EngineOverloaded",
    "EngineTimeout",
    "EngineUnavailable",
    "InferenceError",
    "InvalidRequest",
    "LocalEngine",
    "OpenAIEngine",
    "PromptReport",
    "SamplingParams",
    "StreamInterrupted",
    "StructuredOutputError",
    "Usage",
    "collect",
    "fit_to_window",
    "generate_json",
    "open_engine",
    "parse_json_reply",
    "shared_prefix_ratio",
    "turn_messages",
]


def __getattr__(name: str) -> Any:
    if name == "LocalEngine":
        from inference.local import LocalEngine

        return LocalEngine
    if name == "OpenAIEngine":
        from inference.openai_engine import OpenAIEngine

        return OpenAIEngine
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
