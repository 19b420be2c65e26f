"""Buttons under an answer. Persistent: each is a `DynamicItem` whose custom_id says only what
it does (`qf:regen`, `qf:prev`, `qf:fu:1`, …); which answer it belongs to is looked up in Redis by
the message it sits on, so buttons keep working after a restart without any in-memory state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import discord

TEMPLATE = r"qf:(?P<action>regen|prev|next|up|down|fu)(?::(?P<arg>[0-9]))?"
LABEL_CHARS = 80  # Discord's limit on a button label


class ButtonHandler(Protocol):
    async def press(
        self, interaction: discord.Interaction, action: str, arg: int | None
    ) -> None: ...


class AnswerButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(
        self,
        action: str,
        arg: int | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        disabled: bool = False,
        row: int | None = None,
    ) -> None:
        custom_id = f"qf:{action}" + (f":{arg}" if arg is not None else "")
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=style,
                disabled=disabled,
                custom_id=custom_id,
                row=row,
            )
        )
        self.action, self.arg = action, arg

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> AnswerButton:
        arg = match["arg"]
        return cls(match["action"], int(arg) if arg is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        handler: ButtonHandler = interaction.client.buttons  # type: ignore[attr-defined]
        # Each press runs in a task of its own: a request id and a count of its own.
        with interaction.client.metrics.interaction(f"button:{self.action}"):  # type: ignore[attr-defined]
            await handler.press(interaction, self.action, self.arg)


def answer_view(position: int, total: int, suggestions: Sequence[str]) -> discord.ui.View:
    """◀ n/m ▶ when there are versions, Regenerate, 👍 👎; follow-up questions on their own row
    (Discord fits five buttons in a row)."""
    view = discord.ui.View(timeout=None)
    if total > 1:
        view.add_item(AnswerButton("prev", emoji="◀️", disabled=position <= 1, row=0))
        view.add_item(
            discord.ui.Button(label=f"{position}/{total}", disabled=True, custom_id="qf:pos", row=0)
        )
        view.add_item(AnswerButton("next", emoji="▶️", disabled=position >= total, row=0))
    view.add_item(AnswerButton("regen", label="Regenerate", emoji="🔄", row=0))
    feedback_row = 1 if total > 1 else 0
    view.add_item(AnswerButton("up", emoji="👍", row=feedback_row))
    view.add_item(AnswerButton("down", emoji="👎", row=feedback_row))
    for i, question in enumerate(suggestions[:3]):
        label = question if len(question) <= LABEL_CHARS else question[: LABEL_CHARS - 1] + "…"
        view.add_item(
            AnswerButton(
                "fu", i, label=label, style=discord.ButtonStyle.primary, row=feedback_row + 1
            )
        )
    return view
