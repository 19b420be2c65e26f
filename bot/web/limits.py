"""Rate limits: a token bucket per key (session, IP), refilled continuously."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`allow(key)` spends one token from `key`'s bucket (`burst` tokens, `per_minute` refill).

    Buckets are in this process's memory; idle ones are dropped once full again, so memory is
    bounded by the keys active in the last minute or so.
    """

    def __init__(self, per_minute: float, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, int(per_minute)))
        self._buckets: dict[str, _Bucket] = {}
        self._last_sweep = time.monotonic()

    def allow(self, key: str, now: float | None = None) -> float:
        """0.0 if allowed (a token is spent), else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if now - self._last_sweep > 60:
            self._sweep(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate if self.rate > 0 else 3600.0

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) * self.rate >= self.burst:
                del self._buckets[key]
