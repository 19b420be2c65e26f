"""Mentions, replies and threads: the reply chain is the conversation."""

from __future__ import annotations

import discord.ext.test as dpytest

from bot.discord import QuipBot
from bot.discord.mentions import question_text
from bot.discord.state import owner_key
from tests.bot.discord.conftest import last_channel_messages, reply


def _answers(channel) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        m
        for m in last_channel_messages(channel)
        if m["author"]["id"] == dpytest.get_config().client.user.id
    ]


async def test_mention_gets_a_streamed_reply_with_sources_and_no_pings(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    channel, member = cfg.channels[0], cfg.members[0]
    await dpytest.message(
        f"<@{discord_bot.user.id}> what are people saying about Tesla?", channel, member
    )
    sent = _answers(channel)
    assert len(sent) == 1
    text = sent[0]["content"]
    assert text.startswith("Tesla is in the news [1](<https://")  # citation link, no preview card
    assert "-# Sources: [1](<https://" in text
    assert "@everyone" not in text and "<@&123>" not in text  # neutralised, never a ping
    # The question the model saw had the bot's mention stripped.
    asked = discord_bot.test_engine.prompts[0][-1].content  # type: ignore[attr-defined]
    assert asked.endswith("what are people saying about Tesla?")
    assert f"<@{discord_bot.user.id}>" not in asked


async def test_messages_not_addressed_to_the_bot_are_ignored(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    await dpytest.message("what are people saying about Tesla?", cfg.channels[0], cfg.members[0])
    assert _answers(cfg.channels[0]) == []


async def test_mention_stripping_keeps_other_mentions_readable(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    other = cfg.members[1]
    msg = await dpytest.message(
        f"<@{discord_bot.user.id}>   what did <@{other.id}> say about   Tesla?",
        cfg.channels[0],
        cfg.members[0],
    )
    assert (
        question_text(msg, discord_bot.user.id)
        == f"what did @{other.display_name} say about Tesla?"
    )


async def test_a_bare_mention_gets_a_hint_not_a_model_call(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    await dpytest.message(f"<@{discord_bot.user.id}>", cfg.channels[0], cfg.members[0])
    assert "Ask me something" in _answers(cfg.channels[0])[0]["content"]
    assert discord_bot.test_engine.prompts == []  # type: ignore[attr-defined]


async def test_replying_to_an_answer_continues_that_conversation(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    channel, alice = cfg.channels[0], cfg.members[0]
    await dpytest.message(f"<@{discord_bot.user.id}> what about Tesla?", channel, alice)
    first = _answers(channel)[-1]
    await reply("and what about Elon?", channel, alice, to=first["id"])
    second = _answers(channel)[-1]
    assert second["id"] != first["id"]
    ref = await discord_bot.state.answer(second["id"])
    assert ref is not None
    line = await discord_bot.turns.chat.path(ref.cid, owner_key(alice.id))
    assert [m.role for m in line] == ["user", "assistant"] * 2
    assert line[2].content == "and what about Elon?"
    # The second prompt carried the first exchange as history.
    assert len(discord_bot.test_engine.prompts[1]) > len(discord_bot.test_engine.prompts[0])  # type: ignore[attr-defined]


async def test_replying_to_an_older_answer_branches_the_conversation_there(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    channel, alice = cfg.channels[0], cfg.members[0]
    await dpytest.message(f"<@{discord_bot.user.id}> what about Tesla?", channel, alice)
    first = _answers(channel)[-1]
    await reply("and what about Elon?", channel, alice, to=first["id"])
    await reply("and what about batteries?", channel, alice, to=first["id"])
    ref = await discord_bot.state.answer(_answers(channel)[-1]["id"])
    assert ref is not None
    line = await discord_bot.turns.chat.path(ref.cid, owner_key(alice.id))
    assert [m.content for m in line if m.role == "user"] == [
        "what about Tesla?",
        "and what about batteries?",
    ]


async def test_someone_else_replying_continues_the_chain_and_owns_their_buttons(
    discord_bot: QuipBot,
):
    cfg = dpytest.get_config()
    channel, alice, bob = cfg.channels[0], cfg.members[0], cfg.members[1]
    await dpytest.message(f"<@{discord_bot.user.id}> what about Tesla?", channel, alice)
    first = _answers(channel)[-1]
    await reply("why though?", channel, bob, to=first["id"])
    ref = await discord_bot.state.answer(_answers(channel)[-1]["id"])
    assert ref is not None and ref.asker_id == bob.id and ref.owner == owner_key(alice.id)


async def test_direct_messages_are_declined_when_not_allowed(discord_bot: QuipBot):
    cfg = dpytest.get_config()
    dm = await cfg.members[0].create_dm()
    await dpytest.message("what about Tesla?", dm, cfg.members[0])
    assert "direct messages" in dpytest.get_message().content
    assert discord_bot.test_engine.prompts == []  # type: ignore[attr-defined]


async def test_mentions_hit_the_per_user_cooldown_politely(make_discord_chat, redis_client):
    from tests.bot.discord.conftest import make_bot
    from tests.bot.scripted_engine import ScriptedEngine

    bot = await make_bot(make_discord_chat(ScriptedEngine(["ok"])), redis_client, cooldown_s=30)
    dpytest.configure(bot)
    cfg = dpytest.get_config()
    await dpytest.message(f"<@{bot.user.id}> what about Tesla?", cfg.channels[0], cfg.members[0])
    await dpytest.message(f"<@{bot.user.id}> what about Tesla?", cfg.channels[0], cfg.members[0])
    sent = [m for m in last_channel_messages(cfg.channels[0]) if m["author"]["id"] == bot.user.id]
    assert "ask again in" in sent[-1]["content"] and "s." in sent[-1]["content"]
    await dpytest.empty_queue()


async def test_a_thread_opened_on_an_answer_is_its_own_conversation(discord_bot: QuipBot):
    from discord.ext.test import backend

    cfg = dpytest.get_config()
    channel, alice = cfg.channels[0], cfg.members[0]
    await dpytest.message(f"<@{discord_bot.user.id}> what about Tesla?", channel, alice)
    answer = _answers(channel)[-1]
    # Discord gives a thread started from a message that message's id.
    state = backend.get_state()
    state.parse_thread_create(
        {
            "id": answer["id"],
            "guild_id": channel.guild.id,
            "parent_id": channel.id,
            "type": 11,
            "name": "Tesla",
            "owner_id": alice.id,
            "message_count": 0,
            "member_count": 1,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": "2024-05-03T00:00:00+00:00",
                "locked": False,
            },
        }
    )
    thread = channel.guild.get_thread(answer["id"])
    assert thread is not None
    await dpytest.message("why is that?", thread, alice)  # no mention needed in the thread
    await dpytest.message("and batteries?", thread, alice)
    in_thread = [
        m for m in last_channel_messages(thread) if m["author"]["id"] == discord_bot.user.id
    ]
    assert len(in_thread) == 2
    ref = await discord_bot.state.answer(in_thread[-1]["id"])
    assert ref is not None
    line = await discord_bot.turns.chat.path(ref.cid, owner_key(alice.id))
    assert [m.content for m in line if m.role == "user"] == [
        "what about Tesla?",
        "why is that?",
        "and batteries?",
    ]


async def test_the_tiny_model_answers_a_mention_end_to_end(
    make_discord_chat, redis_client, tiny_bot_engine
):
    from tests.bot.discord.conftest import make_bot

    bot = await make_bot(make_discord_chat(tiny_bot_engine), redis_client)
    dpytest.configure(bot)
    cfg = dpytest.get_config()
    await dpytest.message(
        f"<@{bot.user.id}> what are people saying about Tesla?", cfg.channels[0], cfg.members[0]
    )
    sent = [m for m in last_channel_messages(cfg.channels[0]) if m["author"]["id"] == bot.user.id]
    assert len(sent) >= 1 and all(len(m["content"]) <= 2000 for m in sent)
    ref = await bot.state.answer(sent[-1]["id"])
    assert ref is not None and ref.parts == [m["id"] for m in sent]
    await dpytest.empty_queue()


async def test_direct_messages_are_answered_without_a_mention_when_allowed(
    make_discord_chat, redis_client
):
    from tests.bot.discord.conftest import make_bot
    from tests.bot.scripted_engine import ScriptedEngine

    bot = await make_bot(
        make_discord_chat(ScriptedEngine(["Tesla [1]."])), redis_client, allow_dms=True
    )
    dpytest.configure(bot)
    member = dpytest.get_config().members[0]
    dm = await member.create_dm()
    await dpytest.message("what about Tesla?", dm, member)
    answer = await dm.fetch_message(dpytest.get_message().id)  # as edited, not as first sent
    assert answer.content.startswith("Tesla [1](<https://")
    assert await bot.state.answer(answer.id) is not None
    await dpytest.empty_queue()
