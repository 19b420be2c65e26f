"""`quipfeed up`: the whole product in one process tree on one machine.

One process owns the embedded Qdrant Edge shard, so the ingest daemon, the web API and
widget, and the Discord bot (when a token is set) share one store object here rather than
asking each other over HTTP. The model is `QUIPFEED_MODEL__URL` (SGLang or any
OpenAI-compatible server), `QUIPFEED_MODEL__PATH` (a local folder), or none: then search,
trending and the widget still work, and a question gets a clear answer about what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from inference.errors import EngineUnavailable
from inference.messages import ChatMessage, Chunk, Completion, SamplingParams
from ingest.daemon import Daemon, trend_prefix
from ingest.http_api import build_app
from ingest.sources import Source
from quipfeed.runtime import (
    DaemonFile,
    daemon_config,
    embedder_for,
    open_bus,
    open_engine,
    open_store,
    redis_url,
    serve_app,
    url_of,
)
from quipfeed.settings import Settings
from retrieval.search import Searcher
from retrieval.trending import TrendCounter

log = logging.getLogger(__name__)

NO_MODEL = (
    "no model is configured, so quipfeed can search and show trends but not answer. Set "
    "QUIPFEED_MODEL__URL to an OpenAI-compatible server (SGLang: python -m sglang.launch_server "
    "…; or `quipfeed serve-model --model DIR`), or QUIPFEED_MODEL__PATH to a local model folder."
)


class MissingModel:
    """The engine when none is configured: every request fails with what to set, at once."""

    model_name = "none"

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> AsyncIterator[Chunk]:
        raise EngineUnavailable(NO_MODEL)
        yield  # pragma: no cover - makes this an async generator, as the protocol expects

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> Completion:
        raise EngineUnavailable(NO_MODEL)

    async def aclose(self) -> None:
        return None


async def run_up(
    settings: Settings,
    sources: list[Source],
    *,
    web_listener: socket.socket,
    ingest_listener: socket.socket,
    tiny: bool = False,
) -> None:
    """Run ingest, web (and Discord with a token) until Ctrl-C / SIGTERM, then stop cleanly:
    sources stop, indexers finish and acknowledge the batch in hand, servers close. The
    listeners come from `quipfeed.ports.listen`, opened before anything loads."""
    from bot.chat import Chat
    from bot.persona import load_personas
    from bot.search import LocalSearch
    from bot.web.app import create_app
    from bot.web.chat_adapter import BotChatService, counter_trending
    from bot.web.metrics import TimedSearch, WebMetrics
    from quipfeed.cli_web import web_options

    embedder = await asyncio.to_thread(embedder_for, settings)
    store = open_store(settings, embedder.dim)
    engine: Any
    if tiny or settings.model.url or settings.model.path:
        engine = await open_engine(settings, tiny=tiny)
    else:
        engine = MissingModel()
    daemon_file = DaemonFile(settings)
    try:
        with redis_url(settings) as url:
            bus = open_bus(settings, url)
            pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=30)
            client = aioredis.Redis(connection_pool=pool)
            searcher = Searcher(store, embedder)
            daemon = Daemon(sources, bus, store, embedder, daemon_config(settings))
            half_life = timedelta(hours=settings.search.half_life_hours)
            search = LocalSearch(searcher, half_life=half_life)
            chat = Chat(client, engine, search, load_personas())
            trends = counter_trending(TrendCounter(client, trend_prefix(settings.redis.stream)))
            # The web app's own Chat times its searches into the web /metrics; the Discord bot
            # (same process, `chat`) keeps its own figures.
            metrics = WebMetrics()
            timed = TimedSearch(search, metrics.retrieval.observe)
            web_chat = Chat(client, engine, timed, load_personas())
            web = create_app(
                BotChatService(web_chat, trending=trends), web_options(settings), metrics
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            async with (
                serve_app(build_app(daemon, searcher), ingest_listener),
                serve_app(web, web_listener),
            ):
                daemon_file.write(url_of(ingest_listener))
                extras = []
                if settings.discord.token is not None and settings.discord.token.get_secret_value():
                    from quipfeed.cli_discord import run_discord_bot

                    extras.append(asyncio.create_task(run_discord_bot(settings, chat, client)))
                _banner(
                    settings,
                    url_of(web_listener),
                    url_of(ingest_listener),
                    engine,
                    sources,
                    bool(extras),
                )
                try:
                    await daemon.run(stop, follow_feeds=True)
                finally:
                    for task in extras:
                        task.cancel()
                    await asyncio.gather(*extras, return_exceptions=True)
            await client.aclose()
            await bus.client.aclose()
    finally:
        daemon_file.remove()
        await engine.aclose()
        store.close()


def _banner(
    settings: Settings,
    web_url: str,
    ingest_url: str,
    engine: Any,
    sources: list[Source],
    discord: bool,
) -> None:
    lines = [
        f"quipfeed is up — chat and widget: {web_url}/  (API docs: /docs)",
        f"  ingest: {ingest_url}/healthz, /metrics; data in {settings.data_dir}",
        f"  feeds: {', '.join(s.spec for s in sources) or 'none (add with /feed or settings)'}",
        f"  model: {engine.model_name if not isinstance(engine, MissingModel) else 'none'}",
        f"  discord: {'on' if discord else 'off (set QUIPFEED_DISCORD__TOKEN)'}",
    ]
    if isinstance(engine, MissingModel):
        lines.append(f"  note: {NO_MODEL}")
    lines.append("  Ctrl-C stops everything cleanly.")
    print("\n".join(lines), file=sys.stderr, flush=True)
