"""Replays of canonical JSON Lines files (`jsonl:PATH`, also `.jsonl.gz`).

Each line is a post in `Post`'s JSON form (`id`, `text`, `created_at` required; other
keys optional; unknown keys kept in `raw`), or `{"op": "delete", "id": …}`. The cursor
is the number of lines consumed, so a restart resumes after the last delivered line.
Blank lines are skipped; a bad line (invalid UTF-8, bad JSON, missing fields) is
delivered as-is and rejected by `normalise`, and the replay goes on.

`speed` paces the replay by the gaps between `created_at`s: 0 = as fast as possible,
1 = real time, 10 = ten times faster. `clock.now()` is the replayed present, so old
data can be queried as if it were live.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.changes import Change, Delete, Upsert
from ingest.sources import RawEvent, SourceSpecError
from ingest.sources.payload import get_str, load_json_object, parse_time
from ingest.sources.post_build import build_post, compact_raw, primary_lang
from retrieval.post import Post, PostRejected

_CREATED_AT = re.compile(rb'"created_at"\s*:\s*"([^"]{10,40})"')
# Keys of the shared data's lines that are `Post` fields under another name.
_ALIASES = {
    "author_did": "author_id",
    "favourites_count": "like_count",
    "reblogs_count": "repost_count",
    "replies_count": "reply_count",
}
_FIELDS = set(Post.model_fields) - {"raw"}


class ReplayClock:
    """The replayed present. Before the first event it is the wall clock; with speed 0
    it is the newest `created_at` replayed so far; with speed > 0 it runs from the first
    replayed `created_at` at `speed` times real time (and goes on after the file ends)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._virtual_start: datetime | None = None
        self._wall_start = 0.0
        self._newest: datetime | None = None

    def now(self) -> datetime:
        if self._virtual_start is None:
            return self._newest or datetime.now(UTC)
        elapsed = (time.monotonic() - self._wall_start) * self.speed
        running = self._virtual_start + timedelta(seconds=elapsed)
        return max(running, self._newest) if self._newest else running

    def delay_for(self, created_at: datetime, max_gap_s: float | None) -> float:
        """Seconds to wait before delivering an event created at `created_at`."""
        if self._newest is None or created_at > self._newest:
            self._newest = created_at
        if self.speed <= 0:
            return 0.0
        if self._virtual_start is None:
            self._virtual_start, self._wall_start = created_at, time.monotonic()
            return 0.0
        target = self._wall_start + (created_at - self._virtual_start).total_seconds() / self.speed
        delay = target - time.monotonic()
        if max_gap_s is not None and delay > max_gap_s:
            # Skip the dead time: move the virtual start so the gap shrinks to max_gap_s.
            skipped = timedelta(seconds=(delay - max_gap_s) * self.speed)
            self._virtual_start += skipped
            delay = max_gap_s
        return max(0.0, delay)


class JsonlSource:
    """A file replay; `finite`."""

    finite = True

    def __init__(self, spec: str, *, speed: float = 0.0, max_gap_s: float | None = None) -> None:
        self._spec = spec
        self.path = Path(spec.removeprefix("jsonl:")).expanduser()
        if not str(spec.removeprefix("jsonl:")):
            raise SourceSpecError("jsonl spec needs a path, e.g. jsonl:data/posts.jsonl")
        if not self.path.is_file():
            raise SourceSpecError(f"jsonl file not found: {self.path}")
        if speed < 0:
            raise SourceSpecError(f"jsonl speed must be ≥ 0 (0 = as fast as possible), got {speed}")
        if max_gap_s is not None and max_gap_s < 0:
            raise SourceSpecError(f"jsonl max_gap_s must be ≥ 0, got {max_gap_s}")
        self.speed = speed
        self.max_gap_s = max_gap_s
        self.clock = ReplayClock(speed)

    @property
    def spec(self) -> str:
        return self._spec

    def _lines(self) -> Iterator[bytes]:
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rb") as handle:
            yield from handle

    async def events(self, cursor: str | None) -> AsyncIterator[RawEvent]:
        """Lines after line `cursor` (a count of lines already consumed)."""
        skip = int(cursor) if cursor and cursor.isdigit() else 0
        for number, line in enumerate(self._lines(), start=1):
            if number <= skip:
                continue
            payload = line.rstrip(b"\r\n")
            if not payload.strip():
                continue
            found = _CREATED_AT.search(payload)
            delay = 0.0
            if found is not None:
                try:
                    stamp = parse_time(found.group(1).decode("ascii"))
                except (PostRejected, UnicodeDecodeError):
                    pass
                else:
                    delay = self.clock.delay_for(stamp, self.max_gap_s)
            # Yield to the loop even at speed 0, so a long replay never starves it.
            await asyncio.sleep(delay)
            yield RawEvent(payload=payload, cursor=str(number))

    def normalise(self, event: RawEvent) -> list[Change]:
        line = load_json_object(event.payload)
        op = line.get("op")
        if op == "delete":
            post_id = get_str(line, "id", required=True)
            if not post_id:
                raise PostRejected("missing_field", "id")
            return [Delete(post_id=post_id)]
        if op is not None:
            raise PostRejected("unknown_event_kind", f"op={str(op)[:40]!r}")
        fields: dict[str, Any] = {k: v for k, v in line.items() if k in _FIELDS and v is not None}
        for alias, name in _ALIASES.items():
            if line.get(alias) is not None and name not in fields:
                fields[name] = line[alias]
        for key in ("id", "text", "created_at"):
            if key not in fields:
                raise PostRejected("missing_field", key)
        if isinstance(fields["created_at"], str):
            fields["created_at"] = parse_time(fields["created_at"])
        if "lang" in fields:
            fields["lang"] = primary_lang(fields["lang"])
        if not isinstance(fields.get("source"), str) or not fields.get("source"):
            fields["source"] = "jsonl"
        extra = {k: v for k, v in line.items() if k not in _FIELDS and k not in _ALIASES}
        raw = line.get("raw")
        if isinstance(raw, dict):
            extra = {**raw, **{k: v for k, v in extra.items() if k != "raw"}}
        extra.pop("raw", None)
        fields["raw"] = compact_raw(extra) if extra else None
        return [Upsert(build_post(**fields))]
