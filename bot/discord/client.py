"""The Discord bot: cogs, persistent buttons, command sync, and errors turned into messages.

discord.py reconnects and resumes through gateway drops by itself; nothing here interferes.
Each interaction gets a request id and is counted in `QuipBot.metrics` (`bot.discord.metrics`).
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.answers import SOMETHING_WRONG, AnswerButtons, Answers, tell
from bot.discord.feed_list import FeedRegistry
from bot.discord.metrics import DiscordMetrics
from bot.discord.options import DiscordOptions
from bot.discord.state import DiscordState
from bot.discord.turns import Turns
from bot.discord.views import AnswerButton

log = logging.getLogger(__name__)


def default_intents() -> discord.Intents:
    """Guilds and guild/DM messages, plus Message Content (privileged: enable it in the
    Developer Portal) to read the question in a mention or a reply."""
    wanted = discord.Intents.default()
    wanted.message_content = True
    wanted.presences = False
    wanted.members = False
    return wanted


def command_name(interaction: discord.Interaction) -> str:
    command = interaction.command
    return command.qualified_name if command is not None else "unknown"


class QuipTree(app_commands.CommandTree["QuipBot"]):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        bot: QuipBot = interaction.client  # type: ignore[assignment]
        # discord.py runs each interaction in a task of its own, and this check first: the id
        # set here is the interaction's for everything the command does.
        bot.metrics.begin(command_name(interaction))
        if interaction.guild_id is None and not bot.options.allow_dms:
            bot.metrics.count(command_name(interaction), "refused")
            await tell(interaction, "I only answer in servers here, not in direct messages.")
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        metrics: DiscordMetrics = interaction.client.metrics  # type: ignore[attr-defined]
        refused = isinstance(error, app_commands.CheckFailure)
        metrics.count(command_name(interaction), "refused" if refused else "error")
        if not refused:
            metrics.errors.labels("command").inc()
        if isinstance(error, app_commands.MissingPermissions):
            text = "You don't have the permission this command needs."
        elif isinstance(error, app_commands.NoPrivateMessage):
            text = "This command only works in a server."
        elif isinstance(error, app_commands.CheckFailure):
            return  # the check has already told the user why
        else:
            log.error("slash command %s failed", interaction.command, exc_info=error)
            text = SOMETHING_WRONG
        try:
            await tell(interaction, text)
        except discord.HTTPException:
            pass


class QuipBot(commands.Bot):
    """`turns` is the conversation layer, `state` the Discord surface's Redis, `feeds` the
    shared feed list."""

    def __init__(
        self,
        turns: Turns,
        state: DiscordState,
        feeds: FeedRegistry,
        options: DiscordOptions,
        *,
        intents: discord.Intents | None = None,
        trends: Any | None = None,
        metrics: DiscordMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents or default_intents(),
            # Nothing the bot sends pings anyone, whatever the text says.
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=QuipTree,
            **kwargs,
        )
        self.turns, self.state, self.feeds, self.options = turns, state, feeds, options
        # A `retrieval.trending.TrendCounter` (the indexers' counters) for /trending, if any.
        self.trends = trends
        self.metrics = metrics or DiscordMetrics()
        self.answers = Answers(turns, state, options, self.metrics)
        self.buttons = AnswerButtons(self.answers)

    async def setup_hook(self) -> None:
        from bot.discord.cogs.conversation import Conversation
        from bot.discord.cogs.feeds import Feeds
        from bot.discord.cogs.help import Help
        from bot.discord.cogs.persona import Personas

        for cog in (Conversation(self), Personas(self), Feeds(self), Help(self)):
            await self.add_cog(cog)
        # Buttons on answers sent before this process started route here by custom_id.
        self.add_dynamic_items(AnswerButton)
        if self.options.sync_commands:
            await self.sync_commands()

    async def sync_commands(self) -> None:
        """Per guild in development (shows at once), globally in production."""
        if self.options.dev_guild_id:
            guild = discord.Object(id=self.options.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))

    async def on_message(self, message: discord.Message) -> None:
        # No prefix commands: the Conversation cog's listener answers mentions and replies.
        return

    async def on_app_command_completion(
        self, interaction: discord.Interaction, command: Any
    ) -> None:
        self.metrics.count(command.qualified_name, "ok")

    async def on_ready(self) -> None:
        log.info("Discord bot ready as %s in %d servers", self.user, len(self.guilds))
