"""How the Discord bot behaves; the composition root fills it from settings and environment."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bot.discord.feed_list import JETSTREAM_URL


class DiscordOptions(BaseModel):
    dev_guild_id: int | None = Field(
        default=None,
        description="Sync slash commands to this server only (instant, for development); "
        "unset: sync globally (production; Discord may take a while to show changes).",
    )
    allow_dms: bool = Field(default=False, description="Answer direct messages.")
    cooldown_s: float = Field(default=5.0, ge=0, le=3_600, description="Per user, between asks.")
    edit_interval_s: float = Field(
        default=1.2, ge=0, le=30, description="Least time between edits of a streaming reply."
    )
    jetstream_url: str = Field(default=JETSTREAM_URL, description="For `/feed add bluesky-…`.")
    feed_guild_ids: list[int] | None = Field(
        default=None,
        description="Servers whose admins may use /feed (the feed list is shared by every "
        "server the bot is in); unset: any server, for a bot that serves one community.",
    )
    sync_commands: bool = Field(default=True, description="Sync slash commands at start.")
