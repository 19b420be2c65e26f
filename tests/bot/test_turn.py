"""A turn end to end: real Redis, real Qdrant Edge with real posts, the tiny model or a scripted
reply where the test needs known text."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bot.chat import Chat, Delta, Done
from bot.models import TurnResult
from bot.store import ConversationBusy
from tests.bot.conftest import AS_OF
from tests.bot.scripted_engine import ScriptedEngine


async def run(events) -> tuple[str, TurnResult]:  # type: ignore[no-untyped-def]
    shown, result = [], None
    async for event in events:
        if isinstance(event, Delta):
            shown.append(event.text)
        else:
            assert isinstance(event, Done)
            result = event.result
    assert result is not None
    return "".join(shown), result


async def test_tiny_model_turn_streams_a_grounded_reply_and_remembers_it(
    make_chat, tiny_bot_engine
):
    chat: Chat = make_chat(tiny_bot_engine)
    conv = await chat.new_conversation("alice")
    shown, result = await run(
        chat.ask(conv.id, "alice", "What are people saying about Tesla?", as_of=AS_OF)
    )
    assert result.searched and result.query == "What are people saying about Tesla?"
    assert shown.strip()  # streamed something
    line = await chat.path(conv.id, "alice")
    assert [m.role for m in line] == ["user", "assistant"]
    assert line[0].context, "the question keeps the posts it was answered from"
    assert any("Tesla" in s.post.text for s in line[0].context)
    assert "<<<FEED POSTS" in line[0].sent
    assert line[1].raw is not None and line[1].tokens > 0
    # Suggestions are structured output: a list of at most three one-line strings.
    assert isinstance(result.suggestions, list) and len(result.suggestions) <= 3
    assert all(isinstance(s, str) and "\n" not in s for s in result.suggestions)


async def test_markers_become_links_to_retrieved_posts_and_dangling_ones_are_dropped(make_chat):
    engine = ScriptedEngine(["Tesla is trending [1]. Someone also says so [1, 42]. Nope [99]."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    _, result = await run(chat.ask(conv.id, "alice", "What is said about Tesla?", as_of=AS_OF))
    assert [s.number for s in result.sources] == [1]
    url = result.sources[0].post.url
    assert f"[1]({url})" in result.text
    assert "[42]" not in result.text and "[99]" not in result.text
    assert result.text.endswith("Nope.")
    assert result.suggestions == ["What happened next?", "Who said it first?"]


async def test_mentions_html_and_script_links_never_reach_the_surface(make_chat):
    evil = "@everyone look <script>alert(1)</script> [click](javascript:alert(1)) ok"
    chat: Chat = make_chat(ScriptedEngine([evil]))
    conv = await chat.new_conversation("alice")
    shown, result = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    for text in (shown, result.text):
        assert "@everyone" not in text
        assert "<script>" not in text
        assert "javascript:" not in text


async def test_no_matching_posts_means_the_persona_says_so_without_inventing(make_chat, personas):
    engine = ScriptedEngine(["Invented post [1]"])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice", persona="plain")
    before_any_post = datetime(2024, 4, 1, tzinfo=UTC)
    _, result = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=before_any_post))
    assert result.text == personas["plain"].empty_reply
    assert result.sources == [] and engine.prompts == []


async def test_small_talk_skips_the_feed(make_chat):
    engine = ScriptedEngine(["Hello there."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    _, result = await run(chat.ask(conv.id, "alice", "hi!", as_of=AS_OF))
    assert not result.searched and result.sources == []
    assert "<<<FEED POSTS" not in engine.prompts[0][-1].content


async def test_follow_up_is_rewritten_from_the_previous_query(make_chat):
    engine = ScriptedEngine(["First [1].", "Second [1]."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    await run(
        chat.ask(conv.id, "alice", "What are people saying about Tesla on Mastodon?", as_of=AS_OF)
    )
    _, second = await run(chat.ask(conv.id, "alice", "and what about Bluesky?", as_of=AS_OF))
    assert second.query is not None
    assert "tesla" in second.query and "bluesky" in second.query and "mastodon" not in second.query


async def test_next_turn_prompt_starts_with_the_previous_prompt_and_reply(make_chat):
    engine = ScriptedEngine(["Tesla news [1].", "More [2]."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    await run(chat.ask(conv.id, "alice", "What about the House vote on antisemitism?", as_of=AS_OF))
    first, second = engine.prompts
    assert second[: len(first)] == first  # persona, then the first question exactly as sent
    assert second[len(first)].content == "Tesla news [1]."  # the reply as generated
    assert second[0].role == "system" and "quip" in second[0].content


async def test_prefix_layout_shares_tokens_with_the_tiny_models_template(
    make_chat, tiny_bot_engine
):
    from inference.layout import shared_prefix_ratio

    chat: Chat = make_chat(tiny_bot_engine)
    conv = await chat.new_conversation("alice")
    await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    await run(chat.ask(conv.id, "alice", "and the House vote?", as_of=AS_OF))
    line = await chat.path(conv.id, "alice")
    from inference.messages import ChatMessage

    persona = chat.personas["quip"].system_prompt()
    turn1 = [
        ChatMessage(role="system", content=persona),
        ChatMessage(role="user", content=line[0].model_text()),
    ]
    turn2 = [
        *turn1,
        ChatMessage(role="assistant", content=line[1].model_text()),
        ChatMessage(role="user", content=line[2].model_text()),
    ]
    ids1 = tiny_bot_engine.prompt_ids(turn1)
    ids2 = tiny_bot_engine.prompt_ids(turn2)
    # Everything of turn 1's prompt except the opened assistant header is reused by turn 2.
    assert shared_prefix_ratio(ids1, ids2) * len(ids2) >= len(ids1) - 4


async def test_regenerate_adds_a_selected_sibling_and_any_version_can_be_reselected(make_chat):
    engine = ScriptedEngine(["One [1].", "Two [1].", "After two.", "After one."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    _, first = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    _, again = await run(chat.regenerate(conv.id, "alice"))
    assert again.question_id == first.question_id and again.message_id != first.message_id
    assert again.sources == first.sources  # same question, same posts
    # The regenerated answer's prompt is the first one again, byte for byte.
    assert engine.prompts[1] == engine.prompts[0]
    versions = await chat.versions(conv.id, "alice", first.message_id)
    assert [v.id for v in versions] == [first.message_id, again.message_id]
    assert (await chat.path(conv.id, "alice"))[-1].id == again.message_id
    await run(chat.ask(conv.id, "alice", "why?", as_of=AS_OF))  # continues from version two
    line = await chat.select(conv.id, "alice", first.message_id)
    assert [m.id for m in line] == [first.question_id, first.message_id]
    _, later = await run(chat.ask(conv.id, "alice", "why?", as_of=AS_OF))
    line = await chat.path(conv.id, "alice")
    assert line[1].id == first.message_id and line[-1].id == later.message_id
    # Going back to version two restores the line that continued from it.
    line = await chat.select(conv.id, "alice", again.message_id)
    assert [m.content for m in line][-1] == "After two."


async def test_edit_answer_then_continue_uses_the_edited_text(make_chat):
    engine = ScriptedEngine(["Model said this [1].", "Next answer."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    _, first = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    edited = await chat.edit_answer(conv.id, "alice", first.message_id, "I rewrote it [1].")
    assert edited.parent_id == first.question_id and edited.edited and edited.cited == [1]
    await run(chat.ask(conv.id, "alice", "tell me more", as_of=AS_OF))
    assert engine.prompts[-1][2].content == "I rewrote it [1]."
    line = await chat.path(conv.id, "alice")
    assert line[1].id == edited.id and line[2].parent_id == edited.id


async def test_edit_question_adds_a_sibling_question_with_its_own_answer(make_chat):
    engine = ScriptedEngine(["About Tesla [1].", "About the vote [1]."])
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    _, first = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    _, second = await run(
        chat.edit_question(
            conv.id, "alice", first.question_id, "What about the House vote?", as_of=AS_OF
        )
    )
    versions = await chat.versions(conv.id, "alice", first.question_id)
    assert [v.id for v in versions] == [first.question_id, second.question_id]
    assert all(v.parent_id is None for v in versions)
    line = await chat.path(conv.id, "alice")
    assert [m.id for m in line] == [second.question_id, second.message_id]
    assert len(engine.prompts[1]) == 2  # the old question is not in the new one's history


async def test_two_turns_in_one_conversation_never_interleave(make_chat):
    engine = ScriptedEngine(["first answer goes here [1].", "second answer."])
    engine.gate = asyncio.Event()
    chat: Chat = make_chat(engine)
    conv = await chat.new_conversation("alice")
    first = chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF)
    assert isinstance(await anext(first), Delta)  # the first turn holds the conversation now
    with pytest.raises(ConversationBusy):
        await run(chat.ask(conv.id, "alice", "and the vote?", as_of=AS_OF))
    patient: Chat = make_chat(engine, lock_wait=10.0)
    waiting = asyncio.create_task(run(patient.ask(conv.id, "alice", "and the vote?", as_of=AS_OF)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    engine.gate.set()
    _, one = await run(first)
    _, two = await waiting
    line = await chat.path(conv.id, "alice")
    assert [m.id for m in line] == [
        one.question_id,
        one.message_id,
        two.question_id,
        two.message_id,
    ]


async def test_conversations_survive_a_redis_restart(tmp_path, feed, personas):
    import redis.asyncio as aioredis

    from quipfeed.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.ensure_running()
    client = aioredis.from_url(url)
    chat = Chat(client, ScriptedEngine(["Remember me [1]."]), feed, personas)
    conv = await chat.new_conversation("alice")
    _, result = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
    await client.aclose()
    server.stop()
    server = EmbeddedRedis(tmp_path / "redis")
    client = aioredis.from_url(server.ensure_running())
    try:
        again = Chat(client, ScriptedEngine(), feed, personas)
        line = await again.path(conv.id, "alice")
        assert [m.id for m in line] == [result.question_id, result.message_id]
        assert [c.id for c in await again.conversations("alice")] == [conv.id]
    finally:
        await client.aclose()
        server.stop()


async def test_a_turn_over_the_openai_compatible_server(make_chat, tiny_bot_engine):
    """The SGLang path: streaming and structured suggestions through the OpenAI API."""
    from inference.openai_engine import OpenAIEngine
    from inference.serve import ServerThread

    with_server = ServerThread(tiny_bot_engine).start()
    engine = OpenAIEngine(with_server.url)
    try:
        await engine.start()
        chat: Chat = make_chat(engine)
        conv = await chat.new_conversation("alice", persona="wire")
        shown, result = await run(chat.ask(conv.id, "alice", "What about Tesla?", as_of=AS_OF))
        assert shown.strip() and result.searched
        line = await chat.path(conv.id, "alice")
        assert line[1].model == engine.model_name and line[1].persona == "wire"
        assert line[1].tokens > 0
    finally:
        await engine.aclose()
        with_server.stop()
