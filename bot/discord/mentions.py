"""Messages addressed to the bot: a mention, a reply to one of its answers, any message in a
thread started from one of its answers, or a DM (when allowed).

Discord's reply chain is the conversation: replying to an answer continues from that answer
(even an older one: the conversation branches there), and a thread opened from an answer is a
conversation of its own that starts from it.
"""

from __future__ import annotations

import re

import discord


def question_text(message: discord.Message, bot_id: int) -> str:
    """The message's text with the bot's own mention removed and other mentions made readable
    (`@name`, `#channel`), so the model sees words, not snowflakes."""
    text = re.sub(rf"<@!?{bot_id}>", " ", message.content)
    for user in message.mentions:
        if user.id != bot_id:
            text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
    for role in message.role_mentions:
        text = text.replace(f"<@&{role.id}>", f"@{role.name}")
    for channel in message.channel_mentions:
        text = text.replace(f"<#{channel.id}>", f"#{getattr(channel, 'name', channel.id)}")
    return " ".join(text.split())


def mentions_bot(message: discord.Message, bot_id: int) -> bool:
    """A direct mention only: an @everyone or a reply ping does not count as being asked."""
    return re.search(rf"<@!?{bot_id}>", message.content) is not None
