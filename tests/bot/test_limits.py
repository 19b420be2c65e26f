from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.chat import Chat
from bot.limits import LimitExceeded, Limits, RateLimiter
from tests.bot.conftest import AS_OF
from tests.bot.scripted_engine import ScriptedEngine


async def test_messages_per_minute_refuses_then_recovers(redis_client):
    limiter = RateLimiter(redis_client, Limits(messages_per_minute=2, tokens_per_day=0))
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    await limiter.admit(["user:a"], now=t0)
    await limiter.admit(["user:a"], now=t0 + timedelta(seconds=10))
    with pytest.raises(LimitExceeded) as err:
        await limiter.admit(["user:a"], now=t0 + timedelta(seconds=20))
    assert "2 messages a minute" in str(err.value) and err.value.retry_after == 40
    await limiter.admit(["user:b"], now=t0 + timedelta(seconds=20))  # others are unaffected
    await limiter.admit(["user:a"], now=t0 + timedelta(seconds=61))


async def test_a_full_channel_refuses_without_using_the_users_allowance(redis_client):
    limiter = RateLimiter(redis_client, Limits(messages_per_minute=1, tokens_per_day=0))
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    await limiter.admit(["user:a", "channel:c"], now=t0)
    with pytest.raises(LimitExceeded, match="this channel"):
        await limiter.admit(["user:b", "channel:c"], now=t0)
    await limiter.admit(["user:b", "channel:d"], now=t0)  # b was not counted above


async def test_tokens_per_day_refuse_until_midnight(redis_client):
    limiter = RateLimiter(redis_client, Limits(messages_per_minute=0, tokens_per_day=100))
    t0 = datetime(2026, 1, 1, 23, tzinfo=UTC)
    await limiter.admit(["user:a"], now=t0)
    await limiter.charge(["user:a"], 150, now=t0)
    with pytest.raises(LimitExceeded, match="tokens for today") as err:
        await limiter.admit(["user:a"], now=t0)
    assert err.value.retry_after == 3600
    await limiter.admit(["user:a"], now=t0 + timedelta(hours=2))


async def test_a_turn_charges_its_tokens_and_a_limited_turn_stores_nothing(
    redis_client, feed, personas
):
    from bot.chat import ChatConfig

    config = ChatConfig(limits=Limits(messages_per_minute=1, tokens_per_day=10_000))
    chat = Chat(redis_client, ScriptedEngine(["Fine [1]."]), feed, personas, config)
    conv = await chat.new_conversation("alice")
    async for _ in chat.ask(conv.id, "alice", "What about Tesla?", channel="c1", as_of=AS_OF):
        pass
    assert await chat.limiter.tokens_today("user:alice") > 0
    assert await chat.limiter.tokens_today("channel:c1") > 0
    with pytest.raises(LimitExceeded):
        async for _ in chat.ask(conv.id, "alice", "more?", as_of=AS_OF):
            pass
    assert len(await chat.path(conv.id, "alice")) == 2


async def test_conversations_are_listed_renamed_exported_and_deleted(redis_client, feed, personas):
    chat = Chat(redis_client, ScriptedEngine(["Fine [1]."]), feed, personas)
    a = await chat.new_conversation("alice")
    b = await chat.new_conversation("alice", persona="wire")
    await chat.new_conversation("bob")
    async for _ in chat.ask(a.id, "alice", "What about Tesla?", as_of=AS_OF):
        pass
    listed = await chat.conversations("alice")
    assert [c.id for c in listed] == [a.id, b.id]  # most recently used first
    assert listed[0].title == "What about Tesla?"
    await chat.rename(b.id, "alice", "  Wire   desk ")
    assert (await chat.store.get(b.id)).title == "Wire desk"
    md = await chat.export(a.id, "alice", "markdown")
    assert isinstance(md, str) and "**You**: What about Tesla?" in md and "- [1] @" in md
    data = await chat.export(a.id, "alice", "json")
    assert isinstance(data, dict) and len(data["messages"]) == 2
    answer_id = data["selected"][1]
    await chat.feedback(a.id, "alice", answer_id, "down", "too vague")
    assert (await chat.store.message(a.id, answer_id)).feedback[0].note == "too vague"
    from bot.store import ConversationNotFound

    with pytest.raises(ConversationNotFound):
        await chat.path(a.id, "bob")  # another user's conversation does not exist for bob
    await chat.delete(a.id, "alice")
    assert [c.id for c in await chat.conversations("alice")] == [b.id]
