"""`/feed add|remove|list` (Manage Server only): what the ingester follows, live."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.feed_list import FeedError, to_spec

if TYPE_CHECKING:
    from bot.discord.client import QuipBot

KINDS = [
    app_commands.Choice(name="Bluesky hashtag (#rust)", value="bluesky-tag"),
    app_commands.Choice(name="Bluesky account (did:plc:…)", value="bluesky-account"),
    app_commands.Choice(name="Mastodon hashtag (#python@mastodon.social)", value="mastodon-tag"),
    app_commands.Choice(name="RSS feed (https://…)", value="rss"),
    app_commands.Choice(name="Source spec (jetstream:…, mastodon:…, rss:…)", value="spec"),
]


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Feeds(commands.GroupCog, group_name="feed", group_description="What the feed follows."):
    def __init__(self, bot: QuipBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        # `default_permissions` only hides the commands; a server can override that, so the
        # permission is checked again on every use.
        allowed = self.bot.options.feed_guild_ids
        if allowed is not None and interaction.guild_id not in allowed:
            await interaction.response.send_message(
                "Feeds are managed from the bot operator's own server, not from this one.",
                ephemeral=True,
            )
            return False
        if interaction.permissions.manage_guild:
            return True
        await interaction.response.send_message(
            "You need the **Manage Server** permission to change what I follow.", ephemeral=True
        )
        return False

    @app_commands.command(name="add", description="Follow a hashtag, an account or an RSS feed.")
    @app_commands.describe(kind="What to follow", target="The hashtag, DID, URL or spec")
    @app_commands.choices(kind=KINDS)
    async def add(self, interaction: discord.Interaction, kind: str, target: str) -> None:
        try:
            spec, label = to_spec(kind, target, jetstream_url=self.bot.options.jetstream_url)
            added = await self.bot.feeds.add(
                spec, label, added_by=interaction.user.id, guild=interaction.guild_id
            )
        except FeedError as e:
            await interaction.response.send_message(
                f"Can't follow that: {discord.utils.escape_mentions(str(e))}", ephemeral=True
            )
            return
        await interaction.response.send_message(
            f"Now following **{discord.utils.escape_markdown(label)}**; the ingester picks it "
            "up within seconds."
            if added
            else f"Already following **{label}**.",
            ephemeral=True,
        )

    async def followed(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        feeds = await self.bot.feeds.list()
        return [
            app_commands.Choice(name=f.label[:100], value=f.spec[:100])
            for f in feeds
            if current.lower() in (f.label + f.spec).lower()
        ][:25]

    @app_commands.command(name="remove", description="Stop following a feed.")
    @app_commands.describe(feed="A followed feed (see /feed list)")
    @app_commands.autocomplete(feed=followed)
    async def remove(self, interaction: discord.Interaction, feed: str) -> None:
        removed = await self.bot.feeds.remove(feed.strip())
        await interaction.response.send_message(
            "Stopped following it." if removed else "I wasn't following that (see `/feed list`).",
            ephemeral=True,
        )

    @app_commands.command(name="list", description="The feeds I follow beyond the configured ones.")
    async def list_(self, interaction: discord.Interaction) -> None:
        feeds = await self.bot.feeds.list()
        if not feeds:
            await interaction.response.send_message(
                "No feeds added with `/feed add` yet.", ephemeral=True
            )
            return
        lines = [
            f"• **{discord.utils.escape_markdown(f.label)}** — `{f.spec}` (added {f.at[:10]})"
            for f in feeds
        ]
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True)
