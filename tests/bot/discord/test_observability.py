"""Request ids and metrics of the Discord bot, over the real conversation layer, with the model
behind the real OpenAI-compatible server (the tiny MoE on 127.0.0.1, reached over HTTP)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import discord.ext.test as dpytest
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.discord import QuipBot
from bot.discord.health import HealthServer
from inference.request_id import install_log_records
from tests.bot.discord.conftest import FakeInteraction, last_channel_messages, make_bot, press
from tests.bot.discord.test_commands import run

LAYERS = {"bot.discord.turns", "retrieval.search", "inference.server"}


@pytest.fixture(scope="module")
def model_server(tiny_bot_engine) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from inference.serve import ServerThread

    server = ServerThread(tiny_bot_engine).start()
    yield server.url
    server.stop()


@pytest.fixture
async def traced_bot(make_discord_chat, redis_client, model_server) -> AsyncIterator[QuipBot]:  # type: ignore[no-untyped-def]
    from inference.openai_engine import OpenAIEngine

    install_log_records()  # what `quipfeed.logs.configure` does in the bot's process
    engine = OpenAIEngine(model_server)
    await engine.start()
    bot = await make_bot(make_discord_chat(engine, suggestions=False), redis_client)
    dpytest.configure(bot, members=2)
    yield bot
    await dpytest.empty_queue()
    await engine.aclose()


async def ids_by_layer(caplog: pytest.LogCaptureFixture, since: int) -> dict[str, set[str]]:
    """Request ids per logger in `LAYERS`, from records after index `since`; waits up to 10 s
    for the model server's line (logged when its stream closes, in its own thread)."""
    found: dict[str, set[str]] = {}
    for _ in range(200):
        found = {}
        for record in caplog.records[since:]:
            rid = getattr(record, "request_id", None)
            if record.name in LAYERS and rid is not None:
                found.setdefault(record.name, set()).add(rid)
        if set(found) == LAYERS:
            break
        await asyncio.sleep(0.05)
    return found


async def test_each_slash_command_has_one_request_id_reaching_retrieval_and_the_model_server(
    traced_bot: QuipBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cfg = dpytest.get_config()
    seen: list[str] = []
    for question in ("What is said about Tesla?", "What about the rocket launch?"):
        start = len(caplog.records)
        i = FakeInteraction(traced_bot, cfg.members[0], cfg.channels[0])
        await run(traced_bot, "ask", i, question=question)
        assert i.original is not None and "⚠️" not in i.original.content
        layers = await ids_by_layer(caplog, start)
        assert set(layers) == LAYERS, f"missing {LAYERS - set(layers)}"
        # One id for the whole interaction, in every layer.
        assert all(ids == layers["bot.discord.turns"] for ids in layers.values()), layers
        (rid,) = layers["bot.discord.turns"]
        seen.append(rid)
    assert seen[0] != seen[1]


async def test_a_mention_gets_its_own_request_id_in_retrieval_and_model_logs(
    traced_bot: QuipBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cfg = dpytest.get_config()
    start = len(caplog.records)
    await dpytest.message(
        f"<@{traced_bot.user.id}> what are people saying about Tesla?",
        cfg.channels[0],
        cfg.members[0],
    )
    layers = await ids_by_layer(caplog, start)
    assert set(layers) == LAYERS
    assert len(layers["bot.discord.turns"]) == 1
    assert all(ids == layers["bot.discord.turns"] for ids in layers.values())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_endpoint_counts_interactions_turns_and_time_to_first_token(
    traced_bot: QuipBot,
) -> None:
    cfg = dpytest.get_config()
    channel, alice = cfg.channels[0], cfg.members[0]
    async with HealthServer(traced_bot, traced_bot.metrics, port=0) as health:
        assert health.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=health.url, timeout=10) as http:
            before = samples((await http.get("/metrics")).text)
            await dpytest.message(f"<@{traced_bot.user.id}> what about Tesla?", channel, alice)
            answer = [
                m for m in last_channel_messages(channel) if m["author"]["id"] == traced_bot.user.id
            ][-1]
            shown = await channel.fetch_message(answer["id"])
            await press(
                traced_bot, FakeInteraction(traced_bot, alice, channel, message=shown), "qf:regen"
            )
            scraped = await http.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            after = samples(scraped.text)
            health_answer = await http.get("/healthz")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("quipfeed_discord_interactions_total", command="mention", outcome="ok") == 1
    assert moved("quipfeed_discord_interactions_total", command="button:regen", outcome="ok") == 1
    assert moved("quipfeed_discord_turns_total", outcome="answered") == 2
    assert moved("quipfeed_discord_time_to_first_token_seconds_count") == 2
    assert value(after, "quipfeed_discord_turns_active") == 0
    assert not any(name == "quipfeed_discord_errors_total" for name, _ in after)
    ready = traced_bot.is_ready()
    assert health_answer.status_code == (200 if ready else 503)
    assert health_answer.json()["ok"] is ready


async def test_a_failed_turn_is_counted_as_an_error_by_kind(
    make_discord_chat, redis_client
) -> None:  # type: ignore[no-untyped-def]
    from inference.openai_engine import OpenAIEngine
    from tests.bot.web.conftest import free_port

    # Nothing listens there: the model is down.
    engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}", retries=0, connect_timeout=1)
    bot = await make_bot(make_discord_chat(engine, suggestions=False), redis_client)
    dpytest.configure(bot, members=2)
    cfg = dpytest.get_config()
    i = FakeInteraction(bot, cfg.members[0], cfg.channels[0])
    await run(bot, "ask", i, question="What is said about Tesla?")
    assert i.original is not None and "model is down" in i.original.content
    found = samples(bot.metrics.exposition().decode())
    assert value(found, "quipfeed_discord_errors_total", kind="model_down") == 1
    assert value(found, "quipfeed_discord_turns_total", outcome="model_down") == 1
    await dpytest.empty_queue()
    await engine.aclose()
