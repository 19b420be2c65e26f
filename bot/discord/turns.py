"""The conversation layer as the Discord surface needs it: a thin adapter over `bot.chat.Chat`.

Discord's reply chain can branch: replying to an older answer continues from *that* answer, not
from the latest one. `Chat.ask` always appends to the selected line, so `ask_after` first makes
the replied-to answer the end of the selected line (the conversation tree keeps every other
branch). A time window per turn (`/summarize topic 6h`) is a search that keeps only posts that
recent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime, timedelta

from bot.chat import Chat, TurnEvent
from bot.models import Message
from bot.search import PostSearch
from bot.store import ConversationNotFound, ConversationStore
from retrieval.store import Hit

Clock = Callable[[], datetime | None]


def _gen(events: AsyncIterator[TurnEvent]) -> AsyncGenerator[TurnEvent, None]:
    """`Chat`'s turn methods are async generators typed as iterators; closing one promptly
    releases the conversation's lock when a consumer stops early."""
    assert isinstance(events, AsyncGenerator)
    return events


class _Windowed:
    """`PostSearch` that looks back no further than `window`."""

    def __init__(self, inner: PostSearch, window: timedelta) -> None:
        self.inner, self.window = inner, window

    async def search(
        self, text: str, *, k: int, since: timedelta | None, as_of: datetime | None
    ) -> list[Hit]:
        since = min(since, self.window) if since else self.window
        return await self.inner.search(text, k=k, since=since, as_of=as_of)


class Turns:
    """`as_of` is the clock the feed is read at: None (now) in production, a fixed time in
    tests that replay old posts."""

    def __init__(self, chat: Chat, *, as_of: Clock = lambda: None) -> None:
        self.chat = chat
        self.as_of = as_of

    def _chat_for(self, window: timedelta | None) -> Chat:
        if window is None:
            return self.chat
        c = self.chat
        return Chat(c.store.r, c.engine, _Windowed(c.search, window), c.personas, c.config)

    def has_persona(self, name: str) -> bool:
        return name in self.chat.personas

    async def new_conversation(self, owner: str, persona: str | None) -> str:
        return (await self.chat.new_conversation(owner, persona=persona)).id

    async def ask_after(
        self,
        cid: str,
        owner: str,
        after: str | None,
        text: str,
        *,
        channel: str,
        persona: str | None = None,
        window: timedelta | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Ask `text` as the next question after answer `after` (None: a fresh conversation)."""
        if after is not None:
            await self._end_line_at(cid, owner, after)
        chat = self._chat_for(window)
        turn = _gen(
            chat.ask(cid, owner, text, channel=channel, persona=persona, as_of=self.as_of())
        )
        async with contextlib.aclosing(turn):
            async for event in turn:
                yield event

    async def regenerate(
        self, cid: str, owner: str, answer_id: str, *, channel: str
    ) -> AsyncGenerator[TurnEvent, None]:
        turn = _gen(self.chat.regenerate(cid, owner, answer_id, channel=channel))
        async with contextlib.aclosing(turn):
            async for event in turn:
                yield event

    async def versions(self, cid: str, owner: str, answer_id: str) -> list[Message]:
        return await self.chat.versions(cid, owner, answer_id)

    async def select(self, cid: str, owner: str, message_id: str) -> None:
        await self.chat.select(cid, owner, message_id)

    async def message(self, cid: str, owner: str, message_id: str) -> Message:
        await self.chat.store.get(cid, owner)
        return await self.chat.store.message(cid, message_id)

    async def feedback(self, cid: str, owner: str, answer_id: str, rating: str) -> None:
        await self.chat.feedback(cid, owner, answer_id, rating)

    async def forget(self, cids: list[str], owner: str) -> int:
        gone = 0
        for cid in cids:
            try:
                await self.chat.delete(cid, owner)
                gone += 1
            except ConversationNotFound:
                pass
        return gone

    async def _end_line_at(self, cid: str, owner: str, answer_id: str) -> None:
        # MISSING in bot.chat: `ask(..., after=message_id)`. Until it exists: select the answer,
        # then drop the selection below it, so the selected line ends there.
        await self.chat.select(cid, owner, answer_id)
        store: ConversationStore = self.chat.store
        await store.r.hdel(store._sel_key(cid), answer_id)
