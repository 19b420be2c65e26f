"""Slash commands and buttons through `FakeInteraction` (dpytest cannot send interactions),
over the real conversation layer."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest

from bot.discord import QuipBot
from bot.discord.feed_list import CHANGES_KEY, FEEDS_KEY
from bot.discord.state import owner_key
from inference.errors import EngineUnavailable
from retrieval.post import Post
from tests.bot.discord.conftest import FakeInteraction, make_bot, press
from tests.bot.scripted_engine import ScriptedEngine

ADMIN = discord.Permissions(manage_guild=True, manage_channels=True)


def cmd(bot: QuipBot, name: str) -> Any:
    """The app command `name` ("ask", "feed add") as registered on the bot's tree."""
    parts = name.split()
    found: Any = bot.tree.get_command(parts[0])
    for sub in parts[1:]:
        found = found.get_command(sub)
    assert found is not None, name
    return found


async def run(bot: QuipBot, name: str, interaction: FakeInteraction, /, **params: Any) -> None:
    """Invoke like discord.py does: tree check, cog check, command checks, then the callback."""
    command = cmd(bot, name)
    if not await bot.tree.interaction_check(interaction):  # type: ignore[arg-type]
        return
    binding = command.binding
    if binding is not None and hasattr(binding, "interaction_check"):
        if not await discord.utils.maybe_coroutine(binding.interaction_check, interaction):
            return
    for check in command.checks:
        if not await discord.utils.maybe_coroutine(check, interaction):
            return
    await command.callback(binding, interaction, **params)


def ctx() -> tuple[Any, Any, Any]:
    cfg = dpytest.get_config()
    return cfg.channels[0], cfg.members[0], cfg.members[1]


async def ask(
    bot: QuipBot, question: str = "What is said about Tesla?", user: Any = None
) -> FakeInteraction:
    channel, alice, _ = ctx()
    i = FakeInteraction(bot, user or alice, channel)
    await run(bot, "ask", i, question=question)
    return i


async def test_ask_defers_at_once_then_edits_the_answer_in_with_sources(discord_bot: QuipBot):
    i = await ask(discord_bot)
    assert i.response.kind == "defer_thinking"  # the 3-second deadline is met before any work
    edits = [c for c in i.calls if c[0] == "edit_original"]
    none = discord.AllowedMentions.none().to_dict()
    assert edits and all(c[1]["allowed_mentions"].to_dict() == none for c in edits)
    final = i.original
    assert final is not None
    assert final.content.startswith(
        "> What is said about Tesla?\nTesla is in the news [1](<https://"
    )
    assert "-# Sources: [1](<" in final.content
    assert "@everyone" not in final.content
    ref = await discord_bot.state.answer(final.id)
    assert ref is not None and ref.parts == [final.id]


async def test_a_long_answer_continues_in_follow_up_messages(make_discord_chat, redis_client):
    long = " ".join(f"word{n}" for n in range(700))  # ~5,500 characters
    bot = await make_bot(
        make_discord_chat(ScriptedEngine([long]), max_reply_tokens=None), redis_client
    )
    dpytest.configure(bot, members=2)
    i = await ask(bot)
    followups = [c for c in i.calls if c[0] == "followup"]
    assert len(followups) >= 2
    ref = await bot.state.answer(i.original.id)  # type: ignore[union-attr]
    assert ref is not None and len(ref.parts) == 1 + len(followups)
    assert followups[-1][1]["view"] is not None  # buttons under the last part only
    assert all(c[1]["view"] is None for c in i.calls if c[0] == "edit_original")
    await dpytest.empty_queue()


async def test_buttons_keep_working_after_a_restart(
    discord_bot: QuipBot, make_discord_chat, redis_client
):
    channel, alice, bob = ctx()
    first = await ask(discord_bot)
    msg = first.original
    assert msg is not None
    # A new process: new bot, new objects, the same Redis. Only the custom_id routes the press.
    engine = ScriptedEngine(["A second take on Tesla [1]."])
    bot2 = await make_bot(make_discord_chat(engine), redis_client)
    bot2._connection = discord_bot._connection  # the same gateway session for the fake Discord

    regen = FakeInteraction(bot2, alice, channel, message=msg)
    await press(bot2, regen, "qf:regen")
    assert regen.response.kind == "defer"
    shown = await channel.fetch_message(msg.id)
    assert shown.content.startswith("> What is said about Tesla?\nA second take on Tesla")
    labels = [c.label for row in shown.components for c in row.children]
    assert "2/2" in labels

    back = FakeInteraction(bot2, alice, channel, message=shown)
    await press(bot2, back, "qf:prev")
    shown = await channel.fetch_message(msg.id)
    assert shown.content.startswith("> What is said about Tesla?\nTesla is in the news")
    assert "1/2" in [c.label for row in shown.components for c in row.children]
    ref = await bot2.state.answer(msg.id)
    assert ref is not None
    line = await bot2.turns.chat.path(ref.cid, owner_key(alice.id))
    assert line[-1].id == ref.answer_id  # the shown version is the selected one

    up = FakeInteraction(bot2, alice, channel, message=shown)
    await press(bot2, up, "qf:up")
    assert up.ephemeral and "noted" in up.ephemeral[0]
    stored = await bot2.turns.message(ref.cid, ref.owner, ref.answer_id)
    assert [f.rating for f in stored.feedback] == ["up"]

    stranger = FakeInteraction(bot2, bob, channel, message=shown)
    await press(bot2, stranger, "qf:regen")
    assert stranger.ephemeral and "Only the person who asked" in stranger.ephemeral[0]


async def test_a_suggested_follow_up_button_asks_it_in_the_same_conversation(discord_bot: QuipBot):
    channel, alice, _ = ctx()
    first = await ask(discord_bot)
    assert first.original is not None
    follow = FakeInteraction(discord_bot, alice, channel, message=first.original)
    await press(discord_bot, follow, "qf:fu:0")
    assert follow.response.kind == "defer_thinking"
    assert follow.original is not None
    assert follow.original.content.startswith("> What happened next?\n")
    ref = await discord_bot.state.answer(follow.original.id)
    assert ref is not None
    line = await discord_bot.turns.chat.path(ref.cid, owner_key(alice.id))
    assert [m.content for m in line if m.role == "user"] == [
        "What is said about Tesla?",
        "What happened next?",
    ]


async def test_model_down_is_a_message_a_person_can_act_on(make_discord_chat, redis_client):
    class DownEngine(ScriptedEngine):
        async def stream(self, messages, params=None):  # type: ignore[no-untyped-def, override]
            raise EngineUnavailable("connection refused to 127.0.0.1:30000")
            yield  # pragma: no cover

    bot = await make_bot(make_discord_chat(DownEngine()), redis_client)
    dpytest.configure(bot, members=2)
    i = await ask(bot)
    assert i.original is not None
    assert "The model is down" in i.original.content
    assert "Traceback" not in i.original.content and "127.0.0.1" not in i.original.content
    await dpytest.empty_queue()


async def test_slash_commands_share_the_polite_per_user_cooldown(make_discord_chat, redis_client):
    bot = await make_bot(make_discord_chat(ScriptedEngine(["ok"])), redis_client, cooldown_s=60)
    dpytest.configure(bot, members=2)
    await ask(bot)
    second = await ask(bot)
    assert second.response.kind == "message" and second.original is None
    assert "ask again in" in second.ephemeral[0]
    other = await ask(bot, user=ctx()[2])  # someone else is not slowed down
    assert other.response.kind == "defer_thinking"
    await dpytest.empty_queue()


async def test_summarize_with_nothing_in_the_window_says_so(discord_bot: QuipBot):
    channel, alice, _ = ctx()
    i = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "summarize", i, topic="quantum gardening on Neptune", window="1h")
    assert i.original is not None
    # The fixture posts are hours older than the window: nothing is found, nothing invented.
    assert "Nothing in the last 1 h matched; try a wider window." in i.original.content
    assert discord_bot.test_engine.prompts == []  # type: ignore[attr-defined]


async def test_trending_lists_the_topics_the_indexers_counted(discord_bot: QuipBot, redis_client):
    from retrieval.trending import TrendCounter

    counter = TrendCounter(redis_client, "test:trend")
    as_of = discord_bot.turns.as_of()
    assert as_of is not None
    burst = [
        Post(
            id=f"t:{i}",
            text=f"Everyone is watching the Solar Eclipse from the roof @everyone {i}",
            created_at=as_of - timedelta(minutes=5 + i),
            author=f"user{i}.bsky.social",
            url=f"https://bsky.app/profile/user{i}.bsky.social/post/{i}",
        )
        for i in range(6)
    ]
    await counter.record(burst)
    discord_bot.trends = counter
    channel, alice, _ = ctx()
    i = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "trending", i, window="1h")
    assert i.original is not None
    text = i.original.content
    assert "1. Solar Eclipse — 6 posts (new)" in text
    assert "<https://bsky.app/profile/user" in text
    assert "@everyone" not in text
    assert discord_bot.test_engine.prompts == []  # type: ignore[attr-defined]
    quiet = FakeInteraction(discord_bot, alice, channel)
    discord_bot.trends = TrendCounter(redis_client, "test:empty")
    await run(discord_bot, "trending", quiet, window="1h")
    assert quiet.original is not None
    assert "Nothing stands out in the last 1h." in quiet.original.content


async def test_trending_without_counters_asks_the_model_over_recent_posts(discord_bot: QuipBot):
    channel, alice, _ = ctx()
    i = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "trending", i, window="7d")
    assert i.original is not None and "-# Sources:" in i.original.content


@pytest.mark.parametrize(
    "perms", [discord.Permissions.none(), discord.Permissions(manage_channels=True)]
)
async def test_feed_commands_need_manage_server(discord_bot: QuipBot, redis_client, perms):
    channel, alice, _ = ctx()
    i = FakeInteraction(discord_bot, alice, channel, permissions=perms)
    await run(discord_bot, "feed add", i, kind="bluesky-tag", target="#rust")
    assert "Manage Server" in i.ephemeral[0]
    assert await redis_client.hlen(FEEDS_KEY) == 0


async def test_feed_add_list_remove_reach_the_shared_registry(discord_bot: QuipBot, redis_client):
    channel, alice, _ = ctx()
    add = FakeInteraction(discord_bot, alice, channel, permissions=ADMIN)
    await run(discord_bot, "feed add", add, kind="mastodon-tag", target="#python@mastodon.social")
    assert "Now following" in add.ephemeral[0]
    spec = "mastodon:https://mastodon.social?tag=python"
    assert await redis_client.hexists(FEEDS_KEY, spec)
    listed = FakeInteraction(discord_bot, alice, channel, permissions=ADMIN)
    await run(discord_bot, "feed list", listed)
    assert spec in listed.ephemeral[0]
    bad = FakeInteraction(discord_bot, alice, channel, permissions=ADMIN)
    await run(discord_bot, "feed add", bad, kind="spec", target="gopher://nope")
    assert "Can't follow that" in bad.ephemeral[0]
    rm = FakeInteraction(discord_bot, alice, channel, permissions=ADMIN)
    await run(discord_bot, "feed remove", rm, feed=spec)
    assert "Stopped following" in rm.ephemeral[0]
    changes = await redis_client.xrange(CHANGES_KEY)
    assert [(c[1][b"op"], c[1][b"spec"].decode()) for c in changes] == [
        (b"add", spec),
        (b"remove", spec),
    ]


async def test_persona_per_channel_needs_manage_channels_and_is_used(discord_bot: QuipBot):
    channel, alice, _ = ctx()
    denied = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "persona set", denied, name="plain")
    assert "Manage Channels" in denied.ephemeral[0]
    ok = FakeInteraction(discord_bot, alice, channel, permissions=ADMIN)
    await run(discord_bot, "persona set", ok, name="plain")
    show = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "persona show", show)
    assert "**plain**" in show.ephemeral[0]
    i = await ask(discord_bot)
    ref = await discord_bot.state.answer(i.original.id)  # type: ignore[union-attr]
    assert ref is not None
    line = await discord_bot.turns.chat.path(ref.cid, ref.owner)
    assert line[-1].persona == "plain"


async def test_forget_deletes_only_my_conversations_here(discord_bot: QuipBot):
    channel, alice, bob = ctx()
    mine = await ask(discord_bot)
    theirs = await ask(discord_bot, user=bob)
    f = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "forget", f)
    assert f.ephemeral == ["Forgot 1 conversation of yours in this channel."]
    assert await discord_bot.turns.chat.conversations(owner_key(alice.id)) == []
    assert len(await discord_bot.turns.chat.conversations(owner_key(bob.id))) == 1
    press_after = FakeInteraction(discord_bot, alice, channel, message=mine.original)
    await press(discord_bot, press_after, "qf:regen")
    assert "forgotten" in press_after.ephemeral[0]
    assert theirs.original is not None


async def test_help_is_private(discord_bot: QuipBot):
    channel, alice, _ = ctx()
    i = FakeInteraction(discord_bot, alice, channel)
    await run(discord_bot, "help", i)
    assert i.ephemeral and "/ask" in i.ephemeral[0]


async def test_feeds_can_be_limited_to_the_operators_server(make_discord_chat, redis_client):
    bot = await make_bot(make_discord_chat(ScriptedEngine()), redis_client, feed_guild_ids=[1])
    dpytest.configure(bot, members=2)
    channel, alice, _ = ctx()
    i = FakeInteraction(bot, alice, channel, permissions=ADMIN)
    await run(bot, "feed add", i, kind="rss", target="https://example.org/feed.xml")
    assert "operator's own server" in i.ephemeral[0]
    assert await redis_client.hlen(FEEDS_KEY) == 0
    await dpytest.empty_queue()


async def test_a_deleted_answer_message_does_not_leave_the_conversation_locked(
    discord_bot: QuipBot,
):
    channel, alice, _ = ctx()
    i = FakeInteraction(discord_bot, alice, channel)

    async def gone(**kwargs: Any) -> Any:
        raise discord.NotFound(type("R", (), {"status": 404, "reason": "x"})(), "Unknown Message")

    i.edit_original_response = gone  # type: ignore[method-assign]
    await run(discord_bot, "ask", i, question="What is said about Tesla?")
    cids = await discord_bot.state.take_conversations(channel.id, alice.id)
    assert len(cids) == 1
    key = f"quipfeed:bot:conv:{cids[0]}:lock"
    for _ in range(100):  # released as the abandoned turn is closed, not at the lock's TTL
        if not await discord_bot.turns.chat.store.r.exists(key):
            break
        await asyncio.sleep(0.02)
    assert not await discord_bot.turns.chat.store.r.exists(key)


async def test_the_conversation_layers_rate_limit_reads_as_a_polite_message(
    make_discord_chat, redis_client
):
    from bot.limits import Limits

    chat = make_discord_chat(ScriptedEngine(["ok"]), limits=Limits(messages_per_minute=1))
    bot = await make_bot(chat, redis_client)
    dpytest.configure(bot, members=2)
    await ask(bot)
    second = await ask(bot)
    assert second.original is not None
    assert second.original.content.startswith("> What is said about Tesla?\n⏳ Slow down:")
    assert "try again in" in second.original.content
    await dpytest.empty_queue()
