"""The bot's slash commands and listeners, one cog per area."""
