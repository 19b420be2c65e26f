"""Reading a bounded number of events from a source, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ingest.sources import RawEvent, Source


async def take(
    source: Source,
    cursor: str | None = None,
    *,
    count: int | None = None,
    until: Callable[[list[RawEvent]], bool] | None = None,
    within: float = 10.0,
) -> list[RawEvent]:
    """Events from `source.events(cursor)` until `count` arrived, `until(events)` holds,
    or the source ends; `TimeoutError` after `within` seconds."""
    events: list[RawEvent] = []
    stream = source.events(cursor)
    try:
        async with asyncio.timeout(within):
            async for event in stream:
                events.append(event)
                if count is not None and len(events) >= count:
                    break
                if until is not None and until(events):
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return events
