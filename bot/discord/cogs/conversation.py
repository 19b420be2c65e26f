"""`/ask`, `/summarize`, `/trending`, `/forget`, and answering mentions and replies."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.answers import Answers, cooldown_message, question_header
from bot.discord.mentions import mentions_bot, question_text
from bot.discord.state import AnswerRef, owner_key
from bot.discord.stream import InteractionSink, MessagesSink

if TYPE_CHECKING:
    from bot.discord.client import QuipBot

WINDOWS = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(days=1),
    "3d": timedelta(days=3),
    "7d": timedelta(days=7),
}
WINDOW_CHOICES = [
    app_commands.Choice(name=n, value=k)
    for k, n in (
        ("1h", "last hour"),
        ("6h", "last 6 hours"),
        ("24h", "last 24 hours"),
        ("3d", "last 3 days"),
        ("7d", "last 7 days"),
    )
]
MAX_QUESTION = 1_500
EMPTY_MENTION = (
    "Ask me something after the mention, e.g. *what are people saying about the launch?*"
)


def _home_channel(channel: Any) -> int:
    """Personas are set per channel; a thread uses its parent channel's."""
    parent = getattr(channel, "parent_id", None)
    return int(parent) if isinstance(channel, discord.Thread) and parent else int(channel.id)


class Conversation(commands.Cog):
    def __init__(self, bot: QuipBot) -> None:
        self.bot = bot
        self.answers: Answers = bot.answers

    async def persona_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = sorted(self.bot.turns.chat.personas)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    # ---- slash commands -----------------------------------------------------------------------

    @app_commands.command(name="ask", description="Ask what the public feed is saying.")
    @app_commands.describe(question="Your question", persona="Answer in this persona")
    @app_commands.autocomplete(persona=persona_names)
    async def ask(
        self, interaction: discord.Interaction, question: str, persona: str | None = None
    ) -> None:
        await self._slash_turn(interaction, question, persona=persona)

    @app_commands.command(name="summarize", description="Summarize what people say about a topic.")
    @app_commands.describe(topic="What to summarize", window="How far back to look")
    @app_commands.choices(window=WINDOW_CHOICES)
    async def summarize(
        self, interaction: discord.Interaction, topic: str, window: str = "24h"
    ) -> None:
        span = WINDOWS.get(window, WINDOWS["24h"])
        question = f"Summarize what people are saying about {topic.strip()}."
        await self._slash_turn(interaction, question, window=span)

    @app_commands.command(name="trending", description="What the feed is talking about now.")
    @app_commands.describe(window="How far back to look")
    @app_commands.choices(window=WINDOW_CHOICES)
    async def trending(self, interaction: discord.Interaction, window: str = "24h") -> None:
        span = WINDOWS.get(window, WINDOWS["24h"])
        if self.bot.trends is None:
            # No counters wired in (a bare bot): ask the model over recent posts instead.
            question = "What topics are people posting about most? List the main ones."
            await self._slash_turn(interaction, question, window=span)
            return
        await interaction.response.defer(thinking=True)
        as_of = self.bot.turns.as_of() if callable(getattr(self.bot.turns, "as_of", None)) else None
        trends = await self.bot.trends.trending(span, as_of, limit=8)
        await interaction.edit_original_response(content=render_trends(trends, window))

    @app_commands.command(name="forget", description="Forget your conversations in this channel.")
    async def forget(self, interaction: discord.Interaction) -> None:
        channel_id = int(interaction.channel_id or 0)
        cids = await self.bot.state.take_conversations(channel_id, interaction.user.id)
        gone = await self.bot.turns.forget(cids, owner_key(interaction.user.id))
        word = "conversation" if gone == 1 else "conversations"
        await interaction.response.send_message(
            f"Forgot {gone} {word} of yours in this channel."
            if gone
            else "You have no conversations with me in this channel.",
            ephemeral=True,
        )

    async def _slash_turn(
        self,
        interaction: discord.Interaction,
        question: str,
        *,
        persona: str | None = None,
        window: timedelta | None = None,
    ) -> None:
        question = " ".join(question.split())
        if not question:
            await interaction.response.send_message("Ask me something.", ephemeral=True)
            return
        if len(question) > MAX_QUESTION:
            await interaction.response.send_message(
                f"That question is too long ({len(question)} characters); keep it under "
                f"{MAX_QUESTION}.",
                ephemeral=True,
            )
            return
        if persona is not None and not self.bot.turns.has_persona(persona):
            known = ", ".join(sorted(self.bot.turns.chat.personas))
            await interaction.response.send_message(
                f"There is no persona called `{discord.utils.escape_markdown(persona)}`; "
                f"try one of: {known}.",
                ephemeral=True,
            )
            return
        wait = await self.bot.state.cool_down(interaction.user.id, self.bot.options.cooldown_s)
        if wait:
            await interaction.response.send_message(cooldown_message(wait), ephemeral=True)
            return
        # Within Discord's 3 s: "quipfeed is thinking…" shows until the first edit.
        await interaction.response.defer(thinking=True)
        channel_id = int(interaction.channel_id or 0)
        persona = persona or await self.bot.state.persona_for(
            _home_channel(interaction.channel), interaction.guild_id
        )
        owner = owner_key(interaction.user.id)
        cid = await self.bot.turns.new_conversation(owner, persona)
        await self.bot.state.remember_conversation(channel_id, interaction.user.id, cid)
        events = self.bot.turns.ask_after(
            cid, owner, None, question, channel=str(channel_id), persona=persona, window=window
        )
        await self.answers.stream(
            events,
            InteractionSink(interaction),
            cid=cid,
            owner=owner,
            asker_id=interaction.user.id,
            channel_id=channel_id,
            header=question_header(question),
            window=window,
        )

    # ---- mentions, replies, threads, DMs ------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if me is None or message.author.bot or message.webhook_id is not None:
            return
        is_dm = message.guild is None
        base = await self._replied_answer(message)
        in_thread = None
        if base is None and isinstance(message.channel, discord.Thread):
            in_thread = await self.bot.state.thread(
                message.channel.id
            ) or await self.bot.state.answer(message.channel.id)
            base = in_thread
        if not (is_dm or base is not None or mentions_bot(message, me.id)):
            return
        # Addressed to the bot: from here on one request id, one count (this listener runs in
        # a task of its own, so the id stays with this message).
        self.bot.metrics.begin("mention")
        outcome = "error"
        try:
            outcome = await self._answer(message, me.id, is_dm, base, in_thread)
        finally:
            self.bot.metrics.count("mention", outcome)

    async def _answer(
        self,
        message: discord.Message,
        me_id: int,
        is_dm: bool,
        base: AnswerRef | None,
        in_thread: AnswerRef | None,
    ) -> str:
        """Answer a message addressed to the bot: "ok", "refused" (said why), or "error"."""
        if is_dm and not self.bot.options.allow_dms:
            # Said once per cooldown, so a stream of DMs does not get a stream of refusals.
            if not await self.bot.state.cool_down(message.author.id, self.bot.options.cooldown_s):
                await message.reply(
                    "I don't answer direct messages here. Mention me in a server channel instead.",
                    mention_author=False,
                )
            return "refused"
        text = question_text(message, me_id)
        if not text:
            await message.reply(EMPTY_MENTION, mention_author=False)
            return "refused"
        if len(text) > MAX_QUESTION:
            await message.reply(
                f"That's too long for me; keep it under {MAX_QUESTION} characters.",
                mention_author=False,
            )
            return "refused"
        wait = await self.bot.state.cool_down(message.author.id, self.bot.options.cooldown_s)
        if wait:
            await message.reply(cooldown_message(wait), mention_author=False, delete_after=10)
            return "refused"
        channel_id = message.channel.id
        if base is None:
            owner = owner_key(message.author.id)
            persona = await self.bot.state.persona_for(
                _home_channel(message.channel), message.guild.id if message.guild else None
            )
            cid = await self.bot.turns.new_conversation(owner, persona)
            await self.bot.state.remember_conversation(channel_id, message.author.id, cid)
            after = None
        else:
            # A reply continues that answer's conversation, whoever asked it first; the new
            # answer's buttons belong to whoever asked this question.
            owner, cid, after = base.owner, base.cid, base.answer_id
        # One typing trigger (shows ~10 s or until the reply lands): the first part follows fast.
        await message.channel.typing()
        ref = await self.answers.stream(
            self.bot.turns.ask_after(cid, owner, after, text, channel=str(channel_id)),
            MessagesSink(
                message.channel,
                first=lambda c, **kw: message.reply(c, mention_author=False, **kw),
            ),
            cid=cid,
            owner=owner,
            asker_id=message.author.id,
            channel_id=channel_id,
        )
        if (
            ref is not None
            and isinstance(message.channel, discord.Thread)
            and (in_thread is not None or await self.bot.state.thread(message.channel.id))
        ):
            await self.bot.state.save_thread(message.channel.id, ref)
        return "ok" if ref is not None else "error"

    async def _replied_answer(self, message: discord.Message) -> AnswerRef | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        return await self.bot.state.answer(ref.message_id)


def render_trends(trends: list[Any], window: str) -> str:
    """Trending topics as a compact list; topic names and post text are untrusted, so they are
    sanitised and escaped like model text."""
    from bot.output import safe_text, safe_url

    if not trends:
        return f"Nothing stands out in the last {window}."
    lines = [f"**Trending in the last {window}**"]
    for n, t in enumerate(trends, 1):
        label = discord.utils.escape_markdown(safe_text(t.label))
        growth = "new" if t.growth is None else f"×{t.growth:.1f}"
        line = f"{n}. {label} — {t.count} posts ({growth})"
        sample = next((p for p in t.posts if safe_url(p.get("url") or "")), None)
        if sample is not None:
            line += f" · <{safe_url(sample['url'])}>"
        lines.append(line)
    return "\n".join(lines)[:1900]
