"""On Discord, with the post store out of reach (its Qdrant Edge shard held open by another
process): the answer still comes, led by a notice line and with no sources; regenerated once the
store is back, it has sources, and going back to the first version shows its notice again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord.ext.test as dpytest
import pytest

from bot.chat import FEED_UNAVAILABLE, Chat, ChatConfig
from bot.discord.state import owner_key
from quipfeed.feed_search import ReopeningSearch
from quipfeed.settings import Settings
from retrieval.edge_store import EdgeStore
from tests.bot.discord.conftest import FakeInteraction, make_bot, press
from tests.bot.discord.test_commands import ask
from tests.bot.scripted_engine import ScriptedEngine
from tests.shard_holder import ShardHolder

NOTICE = f"-# ⚠️ {FEED_UNAVAILABLE}\n"


@pytest.fixture
def held(tmp_path: Path, minilm: Any, embedded_posts: Any) -> Iterator[tuple[Path, ShardHolder]]:
    data_dir = tmp_path / "data"
    store = EdgeStore(data_dir / "qdrant" / "posts", minilm.dim)
    store.upsert(*embedded_posts)
    store.close()
    with ShardHolder(data_dir / "qdrant" / "posts") as holder:
        yield data_dir, holder


async def test_store_unreachable_the_answer_leads_with_a_notice_and_cites_nothing(
    held: tuple[Path, ShardHolder], redis_client: Any, personas: Any, minilm: Any
) -> None:
    data_dir, holder = held
    search = ReopeningSearch(Settings(data_dir=data_dir), embedder=minilm)
    engine = ScriptedEngine(["I can't see the feed just now.", "Tesla is in the news [1]."])
    chat = Chat(redis_client, engine, search, personas, ChatConfig(max_reply_tokens=24))
    bot = await make_bot(chat, redis_client)
    dpytest.configure(bot, members=2)
    try:
        i = await ask(bot)
        final = i.original
        assert final is not None
        assert final.content == (
            f"> What is said about Tesla?\n{NOTICE}I can't see the feed just now."
        )
        assert "Sources" not in final.content
        # Streaming edits showed the notice from the first one that had any answer text.
        edits = [c[1]["content"] for c in i.calls if c[0] == "edit_original"]
        assert all(NOTICE in e for e in edits if e and "feed just now" in e)
        ref = await bot.state.answer(final.id)
        assert ref is not None
        line = await bot.turns.chat.path(ref.cid, owner_key(i.user.id))
        assert [m.feed_unavailable for m in line] == [True, True]

        # The store is back: regenerating searches again and cites a post.
        holder.release()
        channel = final.channel
        regen = FakeInteraction(bot, i.user, channel, message=final)
        await press(bot, regen, "qf:regen")
        shown = await channel.fetch_message(final.id)
        assert shown.content.startswith("> What is said about Tesla?\nTesla is in the news [1](<")
        assert NOTICE not in shown.content and "-# Sources: [1](<" in shown.content

        # The first version still says it had no feed behind it.
        back = FakeInteraction(bot, i.user, channel, message=shown)
        await press(bot, back, "qf:prev")
        shown = await channel.fetch_message(final.id)
        assert shown.content == (
            f"> What is said about Tesla?\n{NOTICE}I can't see the feed just now."
        )
    finally:
        await search.aclose()
        await dpytest.empty_queue()
