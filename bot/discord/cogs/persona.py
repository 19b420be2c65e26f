"""`/persona set|list|show`: who answers in this channel, with a server-wide default."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.persona import DEFAULT_PERSONA

if TYPE_CHECKING:
    from bot.discord.client import QuipBot


class Personas(commands.Cog):
    persona = app_commands.Group(name="persona", description="Choose who answers here.")

    def __init__(self, bot: QuipBot) -> None:
        self.bot = bot

    async def names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = sorted(self.bot.turns.chat.personas)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    @persona.command(name="set", description="Set the persona for this channel (or the server).")
    @app_commands.describe(
        name="A persona (see /persona list)",
        server_default="Make it the default for every channel without its own",
    )
    @app_commands.autocomplete(name=names)
    @app_commands.guild_only()
    async def set_(
        self, interaction: discord.Interaction, name: str, server_default: bool = False
    ) -> None:
        if not self.bot.turns.has_persona(name):
            known = ", ".join(sorted(self.bot.turns.chat.personas))
            await interaction.response.send_message(
                f"There is no persona called `{discord.utils.escape_markdown(name)}`; "
                f"try one of: {known}.",
                ephemeral=True,
            )
            return
        perms = interaction.permissions
        needed, allowed = (
            ("Manage Server", perms.manage_guild)
            if server_default
            else ("Manage Channels", perms.manage_channels)
        )
        if not allowed:
            await interaction.response.send_message(
                f"You need the **{needed}** permission to change the persona "
                f"{'for the server' if server_default else 'in this channel'}.",
                ephemeral=True,
            )
            return
        if server_default:
            await self.bot.state.set_persona("guild", int(interaction.guild_id or 0), name)
            where = "the server's default"
        else:
            await self.bot.state.set_persona("channel", int(interaction.channel_id or 0), name)
            where = "the persona in this channel"
        await interaction.response.send_message(f"**{name}** is now {where}.")

    @persona.command(name="list", description="The personas I can answer as.")
    async def list_(self, interaction: discord.Interaction) -> None:
        lines = [
            f"**{p.name}** — {discord.utils.escape_markdown(p.description)}"
            for p in sorted(self.bot.turns.chat.personas.values(), key=lambda p: p.name)
        ]
        await interaction.response.send_message("\n".join(lines) or "No personas.", ephemeral=True)

    @persona.command(name="show", description="Which persona answers in this channel.")
    async def show(self, interaction: discord.Interaction) -> None:
        channel = interaction.channel
        home = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
        name = (
            await self.bot.state.persona_for(
                int(home or interaction.channel_id or 0), interaction.guild_id
            )
            or DEFAULT_PERSONA
        )
        persona = self.bot.turns.chat.personas.get(name)
        about = f" — {discord.utils.escape_markdown(persona.description)}" if persona else ""
        await interaction.response.send_message(
            f"In this channel I answer as **{name}**{about}", ephemeral=True
        )
