"""A small HTTP endpoint beside the Discord bot: `/healthz` and `/metrics` (Prometheus).

The bot has no HTTP server of its own; this one runs in the bot's event loop (aiohttp, which
discord.py already depends on, so nothing new is installed and no signal handlers are taken).
`/healthz` answers 200 with `{"ok": true, ...}` once the bot is connected to Discord and ready,
503 with `"ok": false` before that or while the gateway is down.
"""

from __future__ import annotations

import math
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.discord.metrics import DiscordMetrics

if TYPE_CHECKING:
    from bot.discord.client import QuipBot


class HealthServer:
    """Serves on `host:port` (port 0: a free one; `url` says which) until `aclose()`."""

    def __init__(
        self, bot: QuipBot, metrics: DiscordMetrics, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.bot, self.metrics, self.host, self.port = bot, metrics, host, port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        ready = self.bot.is_ready() and not self.bot.is_closed()
        latency = self.bot.latency
        body: dict[str, Any] = {
            "ok": ready,
            "guilds": len(self.bot.guilds),
            "latency_ms": round(latency * 1000, 1) if math.isfinite(latency) else None,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def start(self) -> HealthServer:
        # Bound here, so port 0 resolves to the free port chosen (and a taken port fails now).
        sock = socket.create_server((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HealthServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
