"""What `quipfeed stats` reports: the store's contents and the bus's health, in one dict."""

from __future__ import annotations

import asyncio
from typing import Any

from ingest.bus import Bus
from retrieval.store import PostStore


async def collect_stats(bus: Bus, store: PostStore) -> dict[str, Any]:
    summary = await asyncio.to_thread(store.summary)
    counters = await bus.counters()
    cursors = await bus.client.hgetall(bus.cursor_key)
    dead_by_reason = {k[5:]: v for k, v in counters.items() if k.startswith("dead:")}
    return {
        "posts": summary.total,
        "by_source": dict(sorted(summary.by_source.items(), key=lambda kv: -kv[1])),
        "oldest": summary.oldest.isoformat() if summary.oldest else None,
        "newest": summary.newest.isoformat() if summary.newest else None,
        "dead_letters": sum(dead_by_reason.values()),
        "dead_letters_by_reason": dead_by_reason,
        "bus_lag": max(0, counters.get("published", 0) - counters.get("acked", 0)),
        "published": counters.get("published", 0),
        "events_by_source": {k[7:]: v for k, v in counters.items() if k.startswith("events:")},
        "cursors": {_s(k): _s(v) for k, v in cursors.items()},
    }


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
