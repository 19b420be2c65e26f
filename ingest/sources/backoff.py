"""Capped exponential backoff with full jitter, for reconnecting network sources."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of `initial * factor**n`, capped at `cap` seconds, each drawn uniformly from
    [delay/2, delay] so that many clients dropped together do not return together."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failed attempt."""
        base = min(self.cap, self.initial * self.factor ** min(self.attempts, 60))
        self.attempts += 1
        return self._rng.uniform(base / 2, base)

    def reset(self) -> None:
        """Call after a connection worked: the next failure starts from `initial` again."""
        self.attempts = 0

    async def sleep(self) -> float:
        """Sleep for the next delay and return it."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
