"""Server-sent events: the `text/event-stream` framing Mastodon's streaming API uses."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseMessage:
    event: str
    data: str


async def sse_messages(lines: AsyncIterable[str]) -> AsyncIterator[SseMessage]:
    """Messages from the lines of an event stream. Comment lines (`:thump` heartbeats)
    are skipped; multi-line `data` is joined with newlines; the default event is
    `message`, as the SSE specification says."""
    event = ""
    data: list[str] = []
    async for raw_line in lines:
        line = raw_line.rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield SseMessage(event or "message", "\n".join(data))
