"""With the post store out of reach, chat still answers: without fresh posts, saying so, citing
nothing; the turn is stored as one that had no feed, and the feed is used again once it is back.

Real parts: a Qdrant Edge shard held open by another process, a Qdrant URL with nothing behind
it, an ingest daemon address that no longer answers, the tiny model, real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.chat import (
    FEED_UNAVAILABLE,
    FEED_UNAVAILABLE_PROMPT,
    Chat,
    ChatConfig,
    Delta,
    Done,
    Notice,
)
from bot.models import TurnResult
from quipfeed.feed_search import ReopeningSearch
from quipfeed.remote_search import RemoteSearch
from quipfeed.settings import QdrantSettings, Settings
from retrieval.edge_store import EdgeStore
from tests.bot.conftest import AS_OF
from tests.bot.scripted_engine import ScriptedEngine
from tests.bot.web.conftest import free_port
from tests.shard_holder import ShardHolder

QUESTION = "What are people saying about Tesla?"


async def run(events: AsyncIterator[Any]) -> tuple[list[Any], TurnResult]:
    seen = [e async for e in events]
    done = seen[-1]
    assert isinstance(done, Done)
    return seen, done.result


@pytest.fixture
def data_dir(tmp_path: Path, minilm, posts, post_vectors) -> Path:  # type: ignore[no-untyped-def]
    """A data dir whose embedded shard holds 60 real posts (closed again: free to open)."""
    store = EdgeStore(tmp_path / "data" / "qdrant" / "posts", minilm.dim)
    store.upsert(posts, post_vectors)
    store.close()
    return tmp_path / "data"


@pytest.fixture
def held(data_dir: Path) -> Iterator[ShardHolder]:
    with ShardHolder(data_dir / "qdrant" / "posts") as holder:
        yield holder


def chat_over(search: Any, redis_client, engine, personas) -> Chat:  # type: ignore[no-untyped-def]
    return Chat(redis_client, engine, search, personas, ChatConfig(max_reply_tokens=24))


async def test_shard_held_elsewhere_the_answer_streams_says_so_cites_nothing_and_is_stored(
    data_dir: Path, held: ShardHolder, redis_client, tiny_bot_engine, personas, minilm
) -> None:
    search = ReopeningSearch(Settings(data_dir=data_dir), embedder=minilm)
    chat = chat_over(search, redis_client, tiny_bot_engine, personas)
    conv = await chat.new_conversation("alice")
    try:
        events, result = await run(chat.ask(conv.id, "alice", QUESTION, as_of=AS_OF))
        # The notice comes first, then the model's answer streams.
        assert events[0] == Notice("feed_unavailable", FEED_UNAVAILABLE)
        deltas = [e for e in events if isinstance(e, Delta)]
        assert deltas and all(events.index(d) > 0 for d in deltas)
        assert "".join(d.text for d in deltas).strip() == result.text.strip() != ""
        assert result.sources == [] and result.notice == FEED_UNAVAILABLE
        assert result.searched is False
        assert not search.connected

        # Stored complete, as a turn without the feed: the model was told, nothing was cited.
        question, answer = await chat.path(conv.id, "alice")
        assert question.feed_unavailable and question.context == []
        assert FEED_UNAVAILABLE_PROMPT in (question.sent or "")
        assert "FEED POSTS" not in (question.sent or "")
        assert answer.feed_unavailable and answer.cited == [] and answer.id == result.message_id
        exported = await chat.export(conv.id, "alice", "json")
        assert isinstance(exported, dict)
        assert [m["feed_unavailable"] for m in exported["messages"]] == [True, True]

        # The store comes back: the next turn has fresh posts again, without a notice.
        held.release()
        events, result = await run(chat.ask(conv.id, "alice", QUESTION, as_of=AS_OF))
        assert not any(isinstance(e, Notice) for e in events)
        assert result.notice is None and result.searched
        line = await chat.path(conv.id, "alice")
        assert line[2].context and not line[2].feed_unavailable
        assert "FEED POSTS" in (line[2].sent or "")

        # Regenerating the first answer searches again now that the feed is back.
        events, result = await run(chat.regenerate(conv.id, "alice", line[1].id))
        assert not any(isinstance(e, Notice) for e in events)
        first = (await chat.path(conv.id, "alice"))[0]
        assert first.context and not first.feed_unavailable
        versions = await chat.versions(conv.id, "alice", result.message_id)
        assert [v.feed_unavailable for v in versions] == [True, False]
    finally:
        await search.aclose()


async def test_qdrant_server_down_the_answer_goes_on_without_the_feed(
    tmp_path: Path, redis_client, personas, minilm
) -> None:
    settings = Settings(
        data_dir=tmp_path, qdrant=QdrantSettings(url=f"http://127.0.0.1:{free_port()}")
    )
    search = ReopeningSearch(settings, embedder=minilm)
    engine = ScriptedEngine(["I can't see the feed just now; Tesla makes cars."])
    chat = chat_over(search, redis_client, engine, personas)
    conv = await chat.new_conversation("bob")
    events, result = await run(chat.ask(conv.id, "bob", QUESTION, as_of=AS_OF))
    assert isinstance(events[0], Notice)
    assert result.text == "I can't see the feed just now; Tesla makes cars."
    assert result.sources == []
    # What the model was sent: the notice in place of the feed block, then the question.
    sent = engine.prompts[0][-1].content
    assert FEED_UNAVAILABLE_PROMPT in sent and sent.endswith(QUESTION)
    assert "FEED POSTS" not in sent


async def test_a_daemon_that_is_gone_means_no_feed_and_a_notice_not_a_failed_turn(
    redis_client, personas
) -> None:
    gone = RemoteSearch(f"http://127.0.0.1:{free_port()}", timeout=5)
    engine = ScriptedEngine(["No feed right now."])
    chat = chat_over(gone, redis_client, engine, personas)
    conv = await chat.new_conversation("carol")
    try:
        events, result = await run(chat.ask(conv.id, "carol", QUESTION, as_of=AS_OF))
    finally:
        await gone.aclose()
    assert [type(e).__name__ for e in events][:2] == ["Notice", "Delta"]
    assert result.notice == FEED_UNAVAILABLE and result.sources == []
    stored = await chat.path(conv.id, "carol")
    assert [m.feed_unavailable for m in stored] == [True, True]


async def test_small_talk_needs_no_feed_so_an_unreachable_store_gives_no_notice(
    redis_client, personas
) -> None:
    gone = RemoteSearch(f"http://127.0.0.1:{free_port()}", timeout=5)
    chat = chat_over(gone, redis_client, ScriptedEngine(["Hello."]), personas)
    conv = await chat.new_conversation("dave")
    try:
        events, result = await run(chat.ask(conv.id, "dave", "hi!", as_of=AS_OF))
    finally:
        await gone.aclose()
    assert not any(isinstance(e, Notice) for e in events)
    assert result.notice is None
