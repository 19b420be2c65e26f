"""Turns that outlive their HTTP connection, so a dropped stream can resume without loss.

A turn runs as its own task and appends each SSE event to a buffer, numbered from 0. The first
request streams the buffer as it grows; a reconnect (`Last-Event-ID: <turn>.<n>`) replays what
came after event n and then follows live. Finished turns stay replayable for `keep_s` seconds.
The buffer lives in this process: a resume must reach the process that ran the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


class TooManyRuns(RuntimeError):
    """The owner already has as many turns generating as allowed."""


@dataclass(frozen=True)
class Event:
    seq: int
    name: str
    data: str

    def id_for(self, run_id: str) -> str:
        return f"{run_id}.{self.seq}"


@dataclass(eq=False)
class Run:
    id: str
    owner: str
    conversation_id: str
    events: list[Event] = field(default_factory=list)
    finished_at: float | None = None
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, name: str, data: str) -> None:
        self.events.append(Event(len(self.events), name, data))
        # Wake every follower; each re-arms by waiting on a fresh event.
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    async def follow(self, after: int = -1) -> AsyncIterator[Event]:
        """Events with seq > `after`, live until the run finishes."""
        nxt = after + 1
        while True:
            while nxt < len(self.events):
                yield self.events[nxt]
                nxt += 1
            if self.finished:
                return
            await self.changed.wait()


Producer = Callable[[Run], AsyncIterator[tuple[str, str]]]


class Runs:
    """The live and recently finished turns of this process."""

    def __init__(self, *, keep_s: float = 300.0, per_owner: int = 2) -> None:
        self.keep_s = keep_s
        self.per_owner = per_owner
        self._runs: dict[str, Run] = {}

    def start(self, owner: str, conversation_id: str, produce: Producer) -> Run:
        """Start `produce(run)` as a task; its (event name, data) pairs fill the run's buffer."""
        self._sweep()
        active = sum(1 for r in self._runs.values() if r.owner == owner and not r.finished)
        if active >= self.per_owner:
            raise TooManyRuns(f"{active} replies are already being generated; wait or stop one")
        run = Run(secrets.token_urlsafe(9), owner, conversation_id)
        self._runs[run.id] = run

        async def drive() -> None:
            try:
                async for name, data in produce(run):
                    run.add(name, data)
            finally:
                run.finished_at = time.monotonic()
                run.add("end", "")  # wakes followers; never sent to clients

        run.task = asyncio.create_task(drive(), name=f"turn-{run.id}")
        return run

    def get(self, owner: str, run_id: str) -> Run | None:
        run = self._runs.get(run_id)
        return run if run is not None and run.owner == owner else None

    async def stop(self, run: Run) -> None:
        if run.task is not None and not run.task.done():
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task

    def active(self) -> int:
        return sum(1 for r in self._runs.values() if not r.finished)

    async def aclose(self) -> None:
        for run in list(self._runs.values()):
            await self.stop(run)

    def _sweep(self) -> None:
        now = time.monotonic()
        for run_id, run in list(self._runs.items()):
            if run.finished_at is not None and now - run.finished_at > self.keep_s:
                del self._runs[run_id]
