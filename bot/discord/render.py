"""Model text → Discord messages: split past 2,000 characters without breaking Markdown, a
compact list of sources, and link previews suppressed (a reply citing eight posts must not
unfurl eight cards).

The text arriving here has already been through `bot.output.safe_text` (mentions neutralised,
HTML and unsafe links removed); Discord additionally gets `allowed_mentions=none` on every send.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from discord.utils import escape_markdown, escape_mentions

from bot.models import Source
from bot.output import safe_url

LIMIT = 2_000
CURSOR = " ▌"
_FENCE = re.compile(r"^```(\S*)", re.MULTILINE)
# A Markdown link to an http(s) URL not already wrapped in <…>: `[2](https://…)`.
_BARE_LINK = re.compile(r"\]\((https?://[^\s)<>]+)\)")


def no_previews(text: str) -> str:
    """`[n](url)` → `[n](<url>)`: the link still works, Discord shows no preview card."""
    return _BARE_LINK.sub(r"](<\1>)", text)


def quote_user_text(text: str, limit: int = 300) -> str:
    """A user's words echoed back by the bot: shortened, on one line, inert (no Markdown, no
    mentions)."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return escape_mentions(escape_markdown(line))


def sources_footer(sources: Sequence[Source], limit: int = 10) -> str:
    """`-# Sources: [1](<url>) @alice · [2](<url>) @bob`: small grey text under the answer."""
    items = []
    for s in sources[:limit]:
        url = safe_url(s.url)
        label = f"[{s.number}](<{url}>)" if url else f"[{s.number}]"
        who = s.post.author or ""
        if who:
            items.append(f"{label} {escape_markdown(escape_mentions('@' + who.lstrip('@')))}")
        else:
            items.append(label)
    return "-# Sources: " + " · ".join(items) if items else ""


def _open_fence(text: str) -> str | None:
    """The info string of a code fence left open at the end of `text`, else None."""
    fences = _FENCE.findall(text)
    return fences[-1] if len(fences) % 2 else None


def _cut(text: str, room: int) -> int:
    """Where to end a part of at most `room` characters: a paragraph break, a line break, a
    space outside a link, else a hard cut (never inside a surrogate-free char, Python str)."""
    window = text[:room]
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep)
        if at > room // 3:
            return at + len(sep)
    at = window.rfind(" ")
    while at > room // 3:
        head = window[:at]
        # Not inside `[label](url)`: the last `[` before the space must be closed by `)`.
        if head.rfind("[") <= head.rfind(")"):
            return at + 1
        at = window.rfind(" ", 0, at)
    return room


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """Parts of at most `limit` characters whose concatenation reads as `text`. A code block cut
    across parts is closed at the end of one part and reopened (same language) in the next."""
    text = text.strip() or "…"
    parts: list[str] = []
    reopen = ""
    while text:
        body = reopen + text
        if len(body) <= limit:
            parts.append(body)
            break
        # Leave room to close a fence this part might leave open.
        room = limit - 4
        end = _cut(body, room)
        if reopen and end <= len(reopen):
            end = room
        part = body[:end].rstrip("\n ")
        rest_start = end - len(reopen)
        fence = _open_fence(part)
        if fence is not None:
            part += "\n```"
            reopen = f"```{fence}\n"
        else:
            reopen = ""
        parts.append(part)
        text = text[rest_start:].lstrip("\n ") if fence is None else text[rest_start:].lstrip("\n")
    return parts
