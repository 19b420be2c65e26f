"""quipfeed on Discord: slash commands, mentions and replies, streamed answers with buttons.

`QuipBot(turns, state, feeds, options)` is the bot; the composition root builds its parts
(`quipfeed/cli_discord.py`).
"""

from bot.discord.client import QuipBot, default_intents
from bot.discord.feed_list import FeedRegistry
from bot.discord.options import DiscordOptions
from bot.discord.state import DiscordState
from bot.discord.turns import Turns

__all__ = ["DiscordOptions", "DiscordState", "FeedRegistry", "QuipBot", "Turns", "default_intents"]
