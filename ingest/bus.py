"""The durable bus between sources and indexers: one Redis Stream and a consumer group.

Sources publish changes together with their cursor in one MULTI/EXEC, so after a crash
a source resumes exactly after what reached the bus. Indexers read through the consumer
group and acknowledge only after the store write is durable; entries a dead consumer
left pending are reclaimed with XAUTOCLAIM. Bad input goes to a dead-letter stream
with its reason instead of being dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ingest.changes import Change, Delete, Upsert
from retrieval.post import Post

# Dead letters keep at most this much of the offending payload: enough to debug, not a 1 MB copy.
DEAD_PAYLOAD_CHARS = 4_000
DEAD_LETTERS_KEPT = 100_000

_ACK_AND_COUNT = """
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('HINCRBY', KEYS[2], 'acked', n)
return n
"""


def trend_prefix(stream: str) -> str:
    """Where the trend counters of a bus live (next to its stream)."""
    return f"{stream}:trend"


@dataclass(frozen=True)
class BusEntry:
    """A change read from the bus, with its stream id and when it arrived (epoch ms)."""

    entry_id: str
    change: Change | None
    arrived_ms: int
    error: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    source: str
    reason: str
    detail: str
    payload: str
    at_ms: int


def encode(change: Change, arrived_ms: int) -> dict[str, str]:
    if isinstance(change, Upsert):
        return {"op": "upsert", "post": change.post.model_dump_json(), "arrived": str(arrived_ms)}
    fields = {"op": "delete", "arrived": str(arrived_ms)}
    for key in ("post_id", "native_id", "author_id"):
        value = getattr(change, key)
        if value:
            fields[key] = value
    return fields


def decode(entry_id: str, fields: dict[str, str]) -> BusEntry:
    arrived = int(fields.get("arrived", "0") or 0)
    try:
        op = fields.get("op")
        if op == "upsert":
            return BusEntry(entry_id, Upsert(Post.model_validate_json(fields["post"])), arrived)
        if op == "delete":
            change = Delete(
                post_id=fields.get("post_id"),
                native_id=fields.get("native_id"),
                author_id=fields.get("author_id"),
            )
            return BusEntry(entry_id, change, arrived)
        return BusEntry(entry_id, None, arrived, error=f"unknown op {op!r}")
    except (ValueError, KeyError) as exc:
        return BusEntry(entry_id, None, arrived, error=f"undecodable entry: {exc}")


class Bus:
    """Redis Streams plumbing. Every key lives under the stream's name."""

    def __init__(self, client: aioredis.Redis, stream: str, group: str) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.dead_stream = f"{stream}:dead"
        self.cursor_key = f"{stream}:cursors"
        self.counters_key = f"{stream}:counters"

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- sources' side -------------------------------------------------------------

    async def publish(
        self,
        source: str,
        batch: Sequence[tuple[Sequence[Change], str | None]],
        dead: Sequence[tuple[str, str, bytes | str]] = (),
    ) -> None:
        """Put each event's changes on the stream, the events that failed on the dead-letter
        stream, and save the source's cursor: all in one transaction, so a crash can neither
        lose an event nor skip past one.

        `batch` holds (changes, cursor) per event, in order; the last non-None cursor wins.
        `dead` holds (reason, detail, payload) per rejected event.
        """
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=True)
        published = 0
        cursor: str | None = None
        for changes, event_cursor in batch:
            for change in changes:
                pipe.xadd(self.stream, encode(change, now_ms))  # type: ignore[arg-type]
                published += 1
            if event_cursor is not None:
                cursor = event_cursor
        for reason, detail, payload in dead:
            self._queue_dead_letter(pipe, source, reason, detail, payload, now_ms)
        if cursor is not None:
            pipe.hset(self.cursor_key, source, cursor)
        if published:
            pipe.hincrby(self.counters_key, "published", published)
        pipe.hincrby(self.counters_key, f"events:{source}", len(batch))
        await pipe.execute()

    async def cursor(self, source: str) -> str | None:
        value = await self.client.hget(self.cursor_key, source)
        return value.decode() if isinstance(value, bytes) else value

    async def dead_letter(
        self, source: str, reason: str, detail: str, payload: bytes | str
    ) -> None:
        pipe = self.client.pipeline(transaction=True)
        self._queue_dead_letter(pipe, source, reason, detail, payload, int(time.time() * 1000))
        await pipe.execute()

    def _queue_dead_letter(
        self, pipe: Any, source: str, reason: str, detail: str, payload: bytes | str, at_ms: int
    ) -> None:
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
        fields = {
            "source": source,
            "reason": reason,
            "detail": detail[:1000],
            "payload": text[:DEAD_PAYLOAD_CHARS],
            "at": str(at_ms),
        }
        pipe.xadd(self.dead_stream, fields, maxlen=DEAD_LETTERS_KEPT, approximate=True)
        pipe.hincrby(self.counters_key, f"dead:{reason}", 1)

    # --- indexers' side ------------------------------------------------------------

    async def read(
        self, consumer: str, count: int, block_ms: int, pending: bool = False
    ) -> list[BusEntry]:
        """New entries for `consumer` (or, with `pending`, those it was given and never acked)."""
        streams: dict[Any, Any] = {self.stream: "0" if pending else ">"}
        reply: Any = await self.client.xreadgroup(
            self.group, consumer, streams, count=count, block=None if pending else block_ms
        )
        return [
            decode(_s(eid), _fields(f)) for _, entries in reply or [] for eid, f in entries if f
        ]

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[BusEntry]:
        """Take over entries another consumer left pending for longer than `min_idle_ms`."""
        reply = await self.client.xautoclaim(
            self.stream,
            self.group,
            consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        entries = reply[1] if len(reply) > 1 else []
        return [decode(_s(eid), _fields(f)) for eid, f in entries if f]

    async def ack(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        # Count only what XACK really acknowledged: a reclaimed entry acked twice counts once.
        await self.client.eval(
            _ACK_AND_COUNT, 2, self.stream, self.counters_key, self.group, *entry_ids
        )

    async def trim(self) -> None:
        """Drop entries every consumer is done with, so the stream does not grow forever."""
        summary = await self.client.xpending(self.stream, self.group)
        oldest_pending = summary.get("min") if summary and summary.get("pending") else None
        groups = await self.client.xinfo_groups(self.stream)
        delivered = next(
            (_s(g["last-delivered-id"]) for g in groups if _s(g["name"]) == self.group), None
        )
        if delivered is None:
            return
        floor = _s(oldest_pending) if oldest_pending else _next_id(delivered)
        await self.client.xtrim(self.stream, minid=floor, approximate=False)

    # --- what `quipfeed stats` shows -----------------------------------------------

    async def counters(self) -> dict[str, int]:
        raw = await self.client.hgetall(self.counters_key)
        return {_s(k): int(v) for k, v in raw.items()}

    async def lag(self) -> int:
        """Changes published and not yet acknowledged by an indexer (pending included)."""
        counters = await self.counters()
        return max(0, counters.get("published", 0) - counters.get("acked", 0))

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        reply: Any = await self.client.xrevrange(self.dead_stream, count=limit)
        letters = []
        for eid, raw in reply:
            f = _fields(raw)
            letters.append(
                DeadLetter(
                    entry_id=_s(eid),
                    source=f.get("source", ""),
                    reason=f.get("reason", ""),
                    detail=f.get("detail", ""),
                    payload=f.get("payload", ""),
                    at_ms=int(f.get("at", "0") or 0),
                )
            )
        return letters

    async def dead_letter_count(self) -> int:
        return int(await self.client.xlen(self.dead_stream))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def dead_letter_json(letter: DeadLetter) -> str:
    return json.dumps(letter.__dict__, ensure_ascii=False)
