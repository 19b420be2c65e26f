"""What the Discord surface remembers in Redis, so buttons and reply chains survive a restart.

Keys (prefix `quipfeed:discord:`):
- `answer:{message id}` — JSON `AnswerRef` for every Discord message that shows (part of) an answer.
- `thread:{thread id}` — JSON `AnswerRef` of the latest answer in a thread started from an answer.
- `convs:{channel id}:{user id}` — set of conversation ids the user started in that channel.
- `persona:channel:{id}`, `persona:guild:{id}` — persona names chosen with `/persona set`.
- `cooldown:{user id}` — present while the user is cooling down (expires by itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from pydantic import BaseModel

PREFIX = "quipfeed:discord:"
REF_TTL_S = 90 * 86_400  # buttons on a three-month-old answer may stop working; that is fine


def owner_key(user_id: int) -> str:
    """The conversation layer's user for a Discord user."""
    return f"discord:{user_id}"


class AnswerRef(BaseModel):
    """Which conversation and answer a Discord message shows, and who asked."""

    cid: str
    owner: str  # the conversation layer's user (`discord:{id}`) the conversation belongs to
    asker_id: int  # the Discord user allowed to press Regenerate, ◀ ▶ and 👍 👎
    answer_id: str
    channel_id: int
    parts: list[int]  # Discord message ids of the answer's parts, in order; buttons on the last
    header: str = ""  # the question echoed above the answer (slash commands), kept on regenerate


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DiscordState:
    def __init__(self, client: aioredis.Redis) -> None:
        self.r = client

    # ---- answers and threads -------------------------------------------------------------------

    async def save_answer(self, ref: AnswerRef, *, stale_parts: Sequence[int] = ()) -> None:
        data = ref.model_dump_json()
        async with self.r.pipeline(transaction=True) as pipe:
            for mid in ref.parts:
                pipe.set(f"{PREFIX}answer:{mid}", data, ex=REF_TTL_S)
            for mid in stale_parts:
                if mid not in ref.parts:
                    pipe.delete(f"{PREFIX}answer:{mid}")
            await pipe.execute()

    async def answer(self, message_id: int) -> AnswerRef | None:
        raw = await self.r.get(f"{PREFIX}answer:{message_id}")
        return AnswerRef.model_validate_json(raw) if raw else None

    async def save_thread(self, thread_id: int, ref: AnswerRef) -> None:
        await self.r.set(f"{PREFIX}thread:{thread_id}", ref.model_dump_json(), ex=REF_TTL_S)

    async def thread(self, thread_id: int) -> AnswerRef | None:
        raw = await self.r.get(f"{PREFIX}thread:{thread_id}")
        return AnswerRef.model_validate_json(raw) if raw else None

    # ---- who started what where ---------------------------------------------------------------

    async def remember_conversation(self, channel_id: int, user_id: int, cid: str) -> None:
        await self.r.sadd(f"{PREFIX}convs:{channel_id}:{user_id}", cid)

    async def take_conversations(self, channel_id: int, user_id: int) -> list[str]:
        """The user's conversation ids in the channel, forgotten here as they are returned."""
        key = f"{PREFIX}convs:{channel_id}:{user_id}"
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.smembers(key)
            pipe.delete(key)
            members, _ = await pipe.execute()
        return sorted(_text(m) for m in members)

    # ---- personas -----------------------------------------------------------------------------

    async def set_persona(self, scope: str, scope_id: int, name: str | None) -> None:
        """`scope` is "channel" or "guild"; `name` None clears the choice."""
        key = f"{PREFIX}persona:{scope}:{scope_id}"
        if name is None:
            await self.r.delete(key)
        else:
            await self.r.set(key, name)

    async def persona_for(self, channel_id: int | None, guild_id: int | None) -> str | None:
        """The channel's persona, else the server's default, else None (the built-in default)."""
        keys = []
        if channel_id is not None:
            keys.append(f"{PREFIX}persona:channel:{channel_id}")
        if guild_id is not None:
            keys.append(f"{PREFIX}persona:guild:{guild_id}")
        if not keys:
            return None
        for value in await self.r.mget(keys):
            if value:
                return _text(value)
        return None

    # ---- cooldowns ----------------------------------------------------------------------------

    async def cool_down(self, user_id: int, seconds: float) -> float:
        """0 if the user may go now (and starts their cooldown), else seconds left to wait."""
        if seconds <= 0:
            return 0.0
        key = f"{PREFIX}cooldown:{user_id}"
        if await self.r.set(key, "1", nx=True, px=int(seconds * 1000)):
            return 0.0
        left = await self.r.pttl(key)
        return max(0.1, left / 1000) if left and left > 0 else 0.1
