"""`/help`: what the bot does and how to talk to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from bot.discord.client import QuipBot

HELP = """\
I read the public feed (Bluesky, Mastodon, RSS) and answer with the posts I found, cited.

**Ask** — `/ask question` or mention me: `@quipfeed what are people saying about the eclipse?`
**Continue** — reply to one of my answers, or open a thread on it.
**Summaries** — `/summarize topic [window]`, `/trending [window]`
**Personas** — `/persona list`, `/persona show`, `/persona set` (Manage Channels / Manage Server)
**Feeds** — `/feed add|remove|list` (Manage Server)
**Privacy** — `/forget` deletes your conversations with me in this channel.
Under each answer: 🔄 Regenerate, ◀ ▶ between versions, suggested follow-ups, 👍 👎."""


class Help(commands.Cog):
    def __init__(self, bot: QuipBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="What I can do.")
    async def help(self, interaction: discord.Interaction) -> None:
        embed = discord.Embed(title="quipfeed", description=HELP, colour=discord.Colour.blurple())
        await interaction.response.send_message(embed=embed, ephemeral=True)
