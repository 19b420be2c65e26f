"""A reply that grows by message edits: at most one edit per `interval` (Discord allows about
five edits per five seconds in a channel), split into several messages past 2,000 characters,
buttons on the last part only.

A `Sink` is where the parts go: the response of a slash command, a reply to a message, or the
messages of an answer being regenerated. Every send and edit carries `allowed_mentions=none`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import discord

from bot.discord.render import CURSOR, split_message

NO_MENTIONS = discord.AllowedMentions.none()


class Sink(Protocol):
    async def put(self, index: int, content: str, view: discord.ui.View | None) -> int:
        """Show `content` as part `index` (creating it if new; `view` None removes buttons)
        and return that part's Discord message id."""
        ...

    async def drop(self, index: int) -> None:
        """Delete part `index` (a shorter version no longer needs it)."""
        ...


def _send_kwargs(view: discord.ui.View | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
    if view is not None:
        kwargs["view"] = view
    return kwargs


class MessagesSink:
    """Parts are messages the bot edits; new parts are sent with `send`, the first as
    `first(content, **kwargs)` (a reply, or the interaction's response)."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        existing: Sequence[Any] = (),
        *,
        first: Callable[..., Any] | None = None,
    ) -> None:
        self.channel = channel
        self.messages: list[Any] = list(existing)
        self.first = first

    async def put(self, index: int, content: str, view: discord.ui.View | None) -> int:
        if index < len(self.messages):
            msg = self.messages[index]
            await msg.edit(content=content, view=view, allowed_mentions=NO_MENTIONS)
            return int(msg.id)
        if index == 0 and self.first is not None:
            msg = await self.first(content, **_send_kwargs(view))
        else:
            msg = await self.channel.send(content, **_send_kwargs(view))
        self.messages.append(msg)
        return int(msg.id)

    async def drop(self, index: int) -> None:
        if index < len(self.messages):
            try:
                await self.messages[index].delete()
            except discord.HTTPException:
                pass  # already gone: nothing to clean up


class InteractionSink:
    """Part 0 is the interaction's (deferred) original response; later parts are follow-ups."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self.followups: list[Any] = []
        self.first_id: int | None = None

    async def put(self, index: int, content: str, view: discord.ui.View | None) -> int:
        if index == 0:
            kwargs: dict[str, Any] = {"content": content, "allowed_mentions": NO_MENTIONS}
            kwargs["view"] = view
            first = await self.interaction.edit_original_response(**kwargs)
            self.first_id = int(first.id)
            return self.first_id
        i = index - 1
        if i < len(self.followups):
            await self.followups[i].edit(content=content, view=view, allowed_mentions=NO_MENTIONS)
            return int(self.followups[i].id)
        msg = await self.interaction.followup.send(content, wait=True, **_send_kwargs(view))
        self.followups.append(msg)
        return int(msg.id)

    async def drop(self, index: int) -> None:
        if 0 < index <= len(self.followups):
            try:
                await self.followups[index - 1].delete()
            except discord.HTTPException:
                pass


class Streamer:
    """Feeds a growing text into a `Sink`, rate-limited; `finish` shows the final text."""

    def __init__(
        self,
        sink: Sink,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        shown_parts: int = 0,
    ) -> None:
        self.sink, self.interval, self.clock = sink, interval, clock
        # What each part shows: (text, has buttons); None for a part whose text is unknown.
        self.shown: list[tuple[str, bool] | None] = [None] * shown_parts
        self.ids: list[int] = []
        self._last = float("-inf")

    async def update(self, text: str) -> None:
        """Show `text` (the whole reply so far) if the last edit is at least `interval` old."""
        if self.clock() - self._last < self.interval:
            return
        await self._show(split_message(text + CURSOR), None)

    async def finish(self, text: str, view: discord.ui.View | None = None) -> list[int]:
        """Show the final `text` with `view` under its last part; returns the parts' ids."""
        parts = split_message(text)
        await self._show(parts, view, final=True)
        for index in range(len(parts), len(self.shown)):
            await self.sink.drop(index)
        self.shown = self.shown[: len(parts)]
        return self.ids[: len(parts)]

    async def _show(
        self, parts: list[str], view: discord.ui.View | None, final: bool = False
    ) -> None:
        self._last = self.clock()
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            wanted = (part, last and view is not None)
            if index < len(self.shown) and self.shown[index] == wanted and not (last and final):
                continue
            mid = await self.sink.put(index, part, view if last else None)
            if index < len(self.ids):
                self.ids[index] = mid
            else:
                self.ids.append(mid)
            if index < len(self.shown):
                self.shown[index] = wanted
            else:
                self.shown.append(wanted)
