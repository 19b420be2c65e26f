"""Conversations in Redis: each a tree of messages plus which version is selected at each fork.

Keys (prefix `quipfeed:bot:`): `conv:{id}` the conversation's info (JSON), `conv:{id}:msgs` a
hash of message id → message JSON, `conv:{id}:sel` a hash of parent id (or `root`) → the selected
child, `user:{user}:convs` a sorted set of the user's conversations by last update, and
`conv:{id}:lock` held while a turn runs. Everything survives a Redis restart (the embedded Redis
keeps an AOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from bot.models import ConversationInfo, Message, utcnow

PREFIX = "quipfeed:bot:"
ROOT = "root"
MAX_TITLE = 120
# Deletes the lock only if we still own it (a lock that expired and was taken over is not ours).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ConversationNotFound(KeyError):
    """No such conversation for this user (another user's counts as none)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "conversation not found"


class MessageNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "message not found"


class ConversationBusy(RuntimeError):
    """Another turn is running in this conversation; try again when it ends."""


class ConversationStore:
    """Conversation trees for many users in one Redis. Safe to share between tasks."""

    def __init__(self, client: aioredis.Redis, *, lock_ttl: float = 300.0) -> None:
        self.r = client
        # A crashed process's lock expires after this; a turn longer than it is not expected.
        self.lock_ttl = lock_ttl

    # ---- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _info_key(cid: str) -> str:
        return f"{PREFIX}conv:{cid}"

    @staticmethod
    def _msgs_key(cid: str) -> str:
        return f"{PREFIX}conv:{cid}:msgs"

    @staticmethod
    def _sel_key(cid: str) -> str:
        return f"{PREFIX}conv:{cid}:sel"

    @staticmethod
    def _user_key(user: str) -> str:
        return f"{PREFIX}user:{user}:convs"

    # ---- conversations ------------------------------------------------------------------------

    async def create(
        self, user: str, *, persona: str | None = None, title: str | None = None
    ) -> ConversationInfo:
        info = ConversationInfo(
            user=user, persona=persona, title=(title or "New conversation")[:MAX_TITLE]
        )
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self._info_key(info.id), info.model_dump_json())
            pipe.zadd(self._user_key(user), {info.id: info.updated_at.timestamp()})
            await pipe.execute()
        return info

    async def get(self, cid: str, user: str | None = None) -> ConversationInfo:
        """The conversation's info; `ConversationNotFound` if absent or not `user`'s."""
        raw = await self.r.get(self._info_key(cid))
        if raw is None:
            raise ConversationNotFound(f"no conversation {cid!r}")
        info = ConversationInfo.model_validate_json(raw)
        if user is not None and info.user != user:
            raise ConversationNotFound(f"no conversation {cid!r}")
        return info

    async def list_for(self, user: str, limit: int = 100) -> list[ConversationInfo]:
        """The user's conversations, most recently updated first."""
        ids = await self.r.zrevrange(self._user_key(user), 0, limit - 1)
        if not ids:
            return []
        raws = await self.r.mget([self._info_key(_text(i)) for i in ids])
        return [ConversationInfo.model_validate_json(r) for r in raws if r is not None]

    async def save_info(self, info: ConversationInfo) -> None:
        info.updated_at = utcnow()
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self._info_key(info.id), info.model_dump_json())
            pipe.zadd(self._user_key(info.user), {info.id: info.updated_at.timestamp()})
            await pipe.execute()

    async def rename(self, cid: str, user: str, title: str) -> ConversationInfo:
        title = " ".join(title.split())[:MAX_TITLE]
        if not title:
            raise ValueError("a title must not be empty")
        info = await self.get(cid, user)
        info.title = title
        await self.save_info(info)
        return info

    async def delete(self, cid: str, user: str) -> None:
        await self.get(cid, user)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self._info_key(cid), self._msgs_key(cid), self._sel_key(cid))
            pipe.zrem(self._user_key(user), cid)
            await pipe.execute()

    # ---- messages -----------------------------------------------------------------------------

    async def add(self, info: ConversationInfo, *messages: Message) -> None:
        """Store messages and select each as the current version under its parent."""
        async with self.r.pipeline(transaction=True) as pipe:
            for m in messages:
                pipe.hset(self._msgs_key(info.id), m.id, m.model_dump_json())
                pipe.hset(self._sel_key(info.id), m.parent_id or ROOT, m.id)
            await pipe.execute()
        await self.save_info(info)

    async def put(self, cid: str, message: Message) -> None:
        """Replace a stored message (feedback); the tree is unchanged."""
        await self.r.hset(self._msgs_key(cid), message.id, message.model_dump_json())

    async def messages(self, cid: str) -> dict[str, Message]:
        raw = await self.r.hgetall(self._msgs_key(cid))
        return {_text(k): Message.model_validate_json(v) for k, v in raw.items()}

    async def message(self, cid: str, mid: str) -> Message:
        raw = await self.r.hget(self._msgs_key(cid), mid)
        if raw is None:
            raise MessageNotFound(f"no message {mid!r} in conversation {cid!r}")
        return Message.model_validate_json(raw)

    async def path(self, cid: str) -> list[Message]:
        """The selected line of the conversation, first question to latest message."""
        msgs = await self.messages(cid)
        raw_sel = await self.r.hgetall(self._sel_key(cid))
        selected = {_text(k): _text(v) for k, v in raw_sel.items()}
        out: list[Message] = []
        node = selected.get(ROOT)
        while node is not None and node in msgs and len(out) <= len(msgs):
            out.append(msgs[node])
            node = selected.get(node)
        return out

    async def select(self, cid: str, mid: str) -> None:
        """Make `mid` the selected version, and its ancestors the selected path to it. What was
        selected below `mid` before stays selected, so returning to a version restores its line."""
        msgs = await self.messages(cid)
        if mid not in msgs:
            raise MessageNotFound(f"no message {mid!r} in conversation {cid!r}")
        mapping: dict[str, str] = {}
        node: Message | None = msgs[mid]
        while node is not None:
            mapping[node.parent_id or ROOT] = node.id
            node = msgs.get(node.parent_id) if node.parent_id else None
        await self.r.hset(self._sel_key(cid), mapping=mapping)  # type: ignore[arg-type]

    async def siblings(self, cid: str, mid: str) -> list[Message]:
        """All versions at `mid`'s place (itself included), oldest first."""
        msgs = await self.messages(cid)
        if mid not in msgs:
            raise MessageNotFound(f"no message {mid!r} in conversation {cid!r}")
        parent = msgs[mid].parent_id
        same = [m for m in msgs.values() if m.parent_id == parent]
        return sorted(same, key=lambda m: (m.created_at, m.id))

    # ---- one turn at a time -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self, cid: str, *, wait: float = 0.0) -> AsyncIterator[None]:
        """Hold the conversation for one turn. Waits up to `wait` seconds for a running turn to
        end, then raises `ConversationBusy`; two turns never interleave."""
        key = f"{PREFIX}conv:{cid}:lock"
        token = secrets.token_hex(8)
        deadline = time.monotonic() + wait
        while not await self.r.set(key, token, nx=True, px=int(self.lock_ttl * 1000)):
            if time.monotonic() >= deadline:
                raise ConversationBusy(
                    "this conversation is already answering a message; wait for it to finish"
                )
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await self.r.eval(_RELEASE, 1, key, token)
