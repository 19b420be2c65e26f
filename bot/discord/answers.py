"""One answer on Discord, from first token to buttons: stream a turn into a `Sink`, end with
its sources and buttons, remember which messages show it; regenerate it, move between its
versions, take feedback, ask a suggested follow-up.

Failures become one line a person can act on (model down, slow down, nothing found); the
traceback goes to the log, never to the chat.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import discord

from bot.chat import FEED_UNAVAILABLE, Delta, Done, Notice, TurnEvent
from bot.discord.metrics import DiscordMetrics
from bot.discord.options import DiscordOptions
from bot.discord.render import no_previews, quote_user_text, sources_footer
from bot.discord.state import AnswerRef, DiscordState
from bot.discord.stream import InteractionSink, MessagesSink, Sink, Streamer
from bot.discord.turns import Turns
from bot.discord.views import answer_view
from bot.limits import LimitExceeded
from bot.models import Source, TurnResult
from bot.search import SearchUnavailable
from bot.store import ConversationBusy, ConversationNotFound, MessageNotFound
from inference.errors import (
    EngineOverloaded,
    EngineUnavailable,
    InferenceError,
    InvalidRequest,
    StreamInterrupted,
)

log = logging.getLogger(__name__)

FORGOTTEN = (
    "That conversation was forgotten (someone used `/forget`). Mention me to start a new one."
)
SOMETHING_WRONG = (
    "⚠️ Something went wrong on my side. Try again; if it keeps happening, tell the admins."
)
NOT_YOURS = (
    "Only the person who asked can use these buttons. Mention me (or use `/ask`) to ask your own."
)


def error_message(error: BaseException) -> str:
    """What to tell the person, for an error a turn raised."""
    if isinstance(error, LimitExceeded):
        return f"⏳ {str(error)[:1].upper()}{str(error)[1:]}."
    if isinstance(error, EngineOverloaded):
        return "⚠️ The model is busy right now. Try again in a minute."
    if isinstance(error, EngineUnavailable):
        return (
            "⚠️ The model is down or not answering right now. Try again in a few minutes; if it "
            "keeps happening, tell this server's admins."
        )
    if isinstance(error, StreamInterrupted):
        return "⚠️ The model stopped partway through that answer. Ask again."
    if isinstance(error, InvalidRequest):
        return "⚠️ The model could not take that question (too long?). Try a shorter one."
    if isinstance(error, InferenceError):
        return "⚠️ The model failed to answer. Try again."
    if isinstance(error, SearchUnavailable):
        return "⚠️ Search is unavailable right now, so I can't read the feed. Try again shortly."
    if isinstance(error, ConversationBusy):
        return "⏳ I'm still answering the previous message here; wait for it to finish."
    if isinstance(error, ConversationNotFound | MessageNotFound):
        return FORGOTTEN
    if isinstance(error, KeyError):  # an unknown persona: the message lists the known ones
        return f"⚠️ {error.args[0] if error.args else error}"
    log.error("unexpected error in a Discord turn", exc_info=error)
    return SOMETHING_WRONG


def describe_window(window: timedelta) -> str:
    hours = window.total_seconds() / 3600
    if hours < 24:
        return f"{hours:g} h"
    return f"{hours / 24:g} d"


def compose(header: str, text: str, sources: list[Source], hint: str = "") -> str:
    body = header + no_previews(text)
    if hint:
        body += f"\n-# {hint}"
    footer = sources_footer(sources)
    return f"{body}\n\n{footer}" if footer else body


def notice_line(text: str) -> str:
    """A notice shown above the answer (e.g. the feed was unreachable), as Discord subtext."""
    return f"-# ⚠️ {no_previews(text)}\n"


def question_header(question: str) -> str:
    """The question echoed above an answer that is not a reply to it (slash commands, buttons)."""
    return f"> {quote_user_text(question)}\n"


class Answers:
    def __init__(
        self,
        turns: Turns,
        state: DiscordState,
        options: DiscordOptions,
        metrics: DiscordMetrics | None = None,
    ) -> None:
        self.turns, self.state, self.options = turns, state, options
        self.metrics = metrics or DiscordMetrics()

    async def stream(
        self,
        events: AsyncGenerator[TurnEvent, None],
        sink: Sink,
        *,
        cid: str,
        owner: str,
        asker_id: int,
        channel_id: int,
        header: str = "",
        window: timedelta | None = None,
        old_parts: list[int] | None = None,
    ) -> AnswerRef | None:
        """Show a turn as it streams; the finished answer's `AnswerRef` (saved), or None when
        the turn failed (the parts then show why)."""
        old_parts = old_parts or []
        events = self.metrics.watch(events)  # TTFT, outcome, the turn's log line
        streamer = Streamer(sink, interval=self.options.edit_interval_s, shown_parts=len(old_parts))
        text = notice = ""
        result: TurnResult | None = None
        try:
            # Closed however this ends, so a failed edit never leaves the turn's lock held.
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, Notice):
                        notice += notice_line(event.text)
                        await streamer.update(header + notice)
                    elif isinstance(event, Delta):
                        text += event.text
                        await streamer.update(header + notice + no_previews(text))
                    elif isinstance(event, Done):
                        result = event.result
        except Exception as e:  # every failure becomes a message; see error_message
            partial = f"{no_previews(text).rstrip()}\n\n" if text.strip() else ""
            await self._show_failure(streamer, f"{header}{notice}{partial}{error_message(e)}")
            return None
        if result is None:  # the turn ended without finishing: say so
            await self._show_failure(streamer, f"{header}{error_message(StreamInterrupted())}")
            return None
        hint = ""
        if window is not None and result.searched and not result.sources:
            hint = f"Nothing in the last {describe_window(window)} matched; try a wider window."
        versions = await self.turns.versions(cid, owner, result.message_id)
        position = next(i for i, m in enumerate(versions, 1) if m.id == result.message_id)
        view = answer_view(position, len(versions), result.suggestions)
        ids = await streamer.finish(
            compose(header + notice, result.text, result.sources, hint), view
        )
        ref = AnswerRef(
            cid=cid,
            owner=owner,
            asker_id=asker_id,
            answer_id=result.message_id,
            channel_id=channel_id,
            parts=ids,
            header=header,
        )
        await self.state.save_answer(ref, stale_parts=old_parts)
        return ref

    @staticmethod
    async def _show_failure(streamer: Streamer, text: str) -> None:
        try:
            await streamer.finish(text)
        except discord.HTTPException:  # the message itself is gone (deleted, no access): log it
            log.warning("could not show a failed turn's message in Discord", exc_info=True)

    async def show_version(self, ref: AnswerRef, message_id: str, sink: Sink) -> AnswerRef:
        """Switch the answer's messages to version `message_id` (and select it)."""
        answer = await self.turns.message(ref.cid, ref.owner, message_id)
        question = await self.turns.message(ref.cid, ref.owner, answer.parent_id or "")
        by_number = {s.number: s for s in question.context}
        sources = [by_number[n] for n in answer.cited if n in by_number]
        versions = await self.turns.versions(ref.cid, ref.owner, message_id)
        position = next(i for i, m in enumerate(versions, 1) if m.id == message_id)
        await self.turns.select(ref.cid, ref.owner, message_id)
        view = answer_view(position, len(versions), answer.suggestions)
        streamer = Streamer(sink, interval=0, shown_parts=len(ref.parts))
        notice = notice_line(FEED_UNAVAILABLE) if answer.feed_unavailable else ""
        ids = await streamer.finish(compose(ref.header + notice, answer.content, sources), view)
        new = ref.model_copy(update={"answer_id": message_id, "parts": ids})
        await self.state.save_answer(new, stale_parts=ref.parts)
        return new


class AnswerButtons:
    """What each button under an answer does (see `bot.discord.views`)."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers

    async def press(self, interaction: discord.Interaction, action: str, arg: int | None) -> None:
        state, turns = self.answers.state, self.answers.turns
        message = interaction.message
        ref = await state.answer(message.id) if message is not None else None
        if ref is None or message is None:
            await tell(interaction, FORGOTTEN)
            return
        if interaction.user.id != ref.asker_id:
            await tell(interaction, NOT_YOURS)
            return
        try:
            answer = await turns.message(ref.cid, ref.owner, ref.answer_id)
            if action in ("up", "down"):
                await turns.feedback(ref.cid, ref.owner, ref.answer_id, action)
                await tell(
                    interaction,
                    "Thanks, noted. 👍"
                    if action == "up"
                    else "Thanks, noted. I'll try to do better. 👎",
                )
                return
            if action in ("prev", "next"):
                versions = await turns.versions(ref.cid, ref.owner, ref.answer_id)
                ids = [m.id for m in versions]
                at = ids.index(ref.answer_id) + (1 if action == "next" else -1)
                if not 0 <= at < len(ids):
                    await interaction.response.defer()
                    return
                await interaction.response.defer()
                await self.answers.show_version(ref, ids[at], await _parts_sink(interaction, ref))
                return
        except (ConversationNotFound, MessageNotFound):
            await tell(interaction, FORGOTTEN)
            return
        wait = await state.cool_down(interaction.user.id, self.answers.options.cooldown_s)
        if wait:
            await tell(interaction, cooldown_message(wait))
            return
        if action == "regen":
            await interaction.response.defer()
            events = turns.regenerate(
                ref.cid, ref.owner, ref.answer_id, channel=str(ref.channel_id)
            )
            await self.answers.stream(
                events,
                await _parts_sink(interaction, ref),
                cid=ref.cid,
                owner=ref.owner,
                asker_id=ref.asker_id,
                channel_id=ref.channel_id,
                header=ref.header,
                old_parts=ref.parts,
            )
            return
        if action == "fu" and arg is not None:
            if arg >= len(answer.suggestions):
                await tell(interaction, "That suggestion is no longer available.")
                return
            question = answer.suggestions[arg]
            await interaction.response.defer(thinking=True)
            events = turns.ask_after(
                ref.cid, ref.owner, ref.answer_id, question, channel=str(ref.channel_id)
            )
            await self.answers.stream(
                events,
                InteractionSink(interaction),
                cid=ref.cid,
                owner=ref.owner,
                asker_id=interaction.user.id,
                channel_id=ref.channel_id,
                header=question_header(question),
            )


def cooldown_message(wait: float) -> str:
    return f"⏳ Easy there — you can ask again in {max(1, round(wait))} s."


async def tell(interaction: discord.Interaction, text: str) -> None:
    """A private note to the person who pressed or typed (never seen by the channel)."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def _parts_sink(interaction: discord.Interaction, ref: AnswerRef) -> MessagesSink:
    """The answer's messages, the pressed one as the interaction gave it, others fetched."""
    channel: Any = interaction.channel
    messages: list[Any] = []
    for mid in ref.parts:
        if interaction.message is not None and mid == interaction.message.id:
            messages.append(interaction.message)
            continue
        try:
            messages.append(await channel.fetch_message(mid))
        except discord.HTTPException:
            break  # a deleted part: the answer continues in fresh messages from here
    return MessagesSink(channel, messages)
