"""Feed sources: each is an async iterator of raw events with a resumable cursor.

A source is chosen by a URI-like spec (`jetstream:wss://…`, `mastodon:https://host`,
`rss:https://…`, `jsonl:PATH`). It yields `RawEvent`s exactly as the wire gave them and
turns each one into `Change`s with `normalise`, which raises `PostRejected` for input
that must go to the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ingest.changes import Change


@dataclass(frozen=True)
class RawEvent:
    """One event as received: a websocket message, an SSE `data`, a JSONL line, a feed entry."""

    payload: bytes | str
    # Where to resume so that this event is not needed again; None when the source has none.
    cursor: str | None = None
    # The transport's own name for the event, where it has one (SSE `event:`).
    kind: str | None = None


class Source(Protocol):
    @property
    def spec(self) -> str:
        """The spec that built it; also the key its cursor is saved under."""

    @property
    def finite(self) -> bool:
        """True when `events` ends by itself (a file replay, one RSS poll)."""

    def events(self, cursor: str | None) -> AsyncIterator[RawEvent]:
        """Yield raw events from `cursor` on (None: from the start, or live)."""

    def normalise(self, event: RawEvent) -> list[Change]:
        """The changes an event asks for: [] for events that do not concern posts
        (likes, follows, heartbeats). Raises `retrieval.post.PostRejected` for bad input."""


class SourceSpecError(ValueError):
    """A `--source` spec that names no known source or is malformed."""
