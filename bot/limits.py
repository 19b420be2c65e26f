"""Per-user and per-channel limits, enforced in Redis so every process sharing it agrees.

Messages per minute is a sliding window (a sorted set of admission times); tokens per day a
counter per UTC day. Admission checks every scope first and records in all of them only if all
allow it, atomically (one Lua script), so a refusal never uses up anyone's allowance.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

PREFIX = "quipfeed:bot:limit:"

# KEYS: per scope, its window key then its tokens key. ARGV: now_ms, window_ms, max_messages,
# max_tokens, member. Returns {0} when admitted, else {1|2, scope index, retry_ms}.
_ADMIT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_msgs, max_tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS, 2 do
  local scope = (i + 1) / 2
  if max_tokens > 0 then
    local used = tonumber(redis.call('get', KEYS[i + 1]) or '0')
    if used >= max_tokens then return {2, scope, 0} end
  end
  if max_msgs > 0 then
    redis.call('zremrangebyscore', KEYS[i], '-inf', now - window)
    if redis.call('zcard', KEYS[i]) >= max_msgs then
      local oldest = redis.call('zrange', KEYS[i], 0, 0, 'WITHSCORES')
      return {1, scope, tonumber(oldest[2]) + window - now}
    end
  end
end
if max_msgs > 0 then
  for i = 1, #KEYS, 2 do
    redis.call('zadd', KEYS[i], now, ARGV[5])
    redis.call('pexpire', KEYS[i], window)
  end
end
return {0}
"""


class Limits(BaseModel):
    """0 turns a limit off."""

    messages_per_minute: int = Field(default=12, ge=0)
    tokens_per_day: int = Field(default=200_000, ge=0)


class LimitExceeded(Exception):
    """A limit was hit; the message says which and when to try again (`retry_after` seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _describe(scope: str) -> str:
    kind, _, name = scope.partition(":")
    return f"this {kind}" if kind in ("user", "channel") else f"'{name or scope}'"


class RateLimiter:
    def __init__(self, client: aioredis.Redis, limits: Limits) -> None:
        self.r = client
        self.limits = limits

    @staticmethod
    def _day(now: datetime) -> str:
        return now.astimezone(UTC).strftime("%Y-%m-%d")

    async def admit(self, scopes: Sequence[str], *, now: datetime | None = None) -> None:
        """Count one message against every scope (`user:alice`, `channel:42`) or raise
        `LimitExceeded` without counting it anywhere."""
        if not scopes:
            return
        now = now or datetime.now(UTC)
        keys: list[str] = []
        for scope in scopes:
            keys += [f"{PREFIX}{scope}:msgs", f"{PREFIX}{scope}:tokens:{self._day(now)}"]
        verdict = await self.r.eval(
            _ADMIT,
            len(keys),
            *keys,
            int(now.timestamp() * 1000),
            60_000,
            self.limits.messages_per_minute,
            self.limits.tokens_per_day,
            secrets.token_hex(8),
        )
        code = int(verdict[0])
        if code == 0:
            return
        scope = scopes[int(verdict[1]) - 1]
        if code == 1:
            wait = max(1, math.ceil(int(verdict[2]) / 1000))
            raise LimitExceeded(
                f"slow down: {_describe(scope)} may send {self.limits.messages_per_minute} "
                f"messages a minute; try again in {wait} s",
                wait,
            )
        midnight = datetime.combine(
            now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC
        )
        wait = math.ceil((midnight - now).total_seconds())
        raise LimitExceeded(
            f"{_describe(scope)} has used its {self.limits.tokens_per_day:,} tokens for today "
            f"(resets at 00:00 UTC, in {wait // 3600} h {wait % 3600 // 60} min)",
            wait,
        )

    async def charge(
        self, scopes: Sequence[str], tokens: int, *, now: datetime | None = None
    ) -> None:
        """Add `tokens` to today's count of every scope."""
        if tokens <= 0 or not scopes:
            return
        now = now or datetime.now(UTC)
        async with self.r.pipeline(transaction=True) as pipe:
            for scope in scopes:
                key = f"{PREFIX}{scope}:tokens:{self._day(now)}"
                pipe.incrby(key, tokens)
                pipe.expire(key, 2 * 86_400)
            await pipe.execute()

    async def tokens_today(self, scope: str, *, now: datetime | None = None) -> int:
        raw = await self.r.get(f"{PREFIX}{scope}:tokens:{self._day(now or datetime.now(UTC))}")
        return int(raw or 0)
