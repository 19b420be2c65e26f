"""What can go wrong between a caller and a model, as exceptions a caller can act on.

Every failure an engine raises is an `InferenceError`; the subclasses say whether retrying later
can help (`EngineUnavailable` and its children) or the request itself is at fault
(`InvalidRequest`).
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error an engine raises."""


class InvalidRequest(InferenceError):
    """The request cannot be served as given: empty messages, bad parameters, prompt too long."""


class EngineUnavailable(InferenceError):
    """The engine cannot be reached or refused to serve; retrying later may succeed."""


class EngineOverloaded(EngineUnavailable):
    """The engine is up but busy (HTTP 429/503, or a full local queue)."""


class CircuitOpen(EngineUnavailable):
    """Recent calls failed repeatedly; calls are refused untried until a cool-down passes."""


class EngineTimeout(EngineUnavailable):
    """No first token, or no next token, arrived within the configured time."""


class StreamInterrupted(InferenceError):
    """A stream stopped partway (connection cut, server error mid-stream); text so far is partial.

    Never retried automatically: the caller has already seen part of the answer.
    """


class StructuredOutputError(InferenceError):
    """The model's reply was not valid JSON for the schema, even after one constrained retry."""

    def __init__(self, message: str, *, raw: str) -> None:
        super().__init__(message)
        self.raw = raw
