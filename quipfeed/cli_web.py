"""`quipfeed web` (the HTTP API, the widget and a demo page) and `quipfeed bench web`.

`quipfeed/cli.py` calls `register(app, bench_app)`. Composition lives here: settings → Redis,
store and search, engine → `bot.chat.Chat` → `BotChatService` → the FastAPI app.

Web options the settings tree does not hold yet are read from the environment with the same
names they would have there (`QUIPFEED_WEB__ALLOWED_ORIGINS='["https://example.org"]'`,
`QUIPFEED_WEB__API_KEYS='{"backend": "s3cret"}'`, `QUIPFEED_WEB__SESSION_SECRET=…`, the
rate limits). Without a session secret one is generated once and kept in the data dir.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Settings (pydantic) load when the command runs, not with `quipfeed --help`.
if TYPE_CHECKING:
    from quipfeed.settings import Settings, WebEnv


def session_secret(settings: Settings, env: WebEnv) -> str:
    """The configured secret, else one generated on first run and kept (0600) in the data dir,
    so sessions survive a restart."""
    if env.session_secret:
        return env.session_secret
    path = settings.data_dir / "web" / "session_secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


def web_options(settings: Settings) -> Any:
    from bot.web.options import WebOptions
    from quipfeed.settings import WebEnv

    env = WebEnv()
    return WebOptions(
        allowed_origins=env.allowed_origins,
        session_secret=session_secret(settings, env),
        api_keys=env.api_keys,
        requests_per_minute_ip=env.requests_per_minute_ip,
        requests_per_minute_session=env.requests_per_minute_session,
        turns_per_minute_session=env.turns_per_minute_session,
        sessions_per_minute_ip=env.sessions_per_minute_ip,
        max_body_bytes=env.max_body_bytes,
        trust_forwarded_for=env.trust_forwarded_for,
    )


async def open_engine(settings: Settings, tiny: bool) -> Any:
    """The model (see `quipfeed.runtime.open_engine`); a missing one is a usage error."""
    from inference.errors import EngineUnavailable
    from quipfeed import runtime

    try:
        return await runtime.open_engine(settings, tiny=tiny)
    except (ValueError, EngineUnavailable) as exc:
        raise typer.BadParameter(f"{exc} (or pass --tiny for a plumbing demo)") from exc


@contextlib.asynccontextmanager
async def web_app(
    settings: Settings, *, tiny: bool = False, chat_config: Any = None
) -> AsyncIterator[Any]:
    """The composed app; Redis, store and engine are closed on exit. `chat_config` is a
    `bot.chat.ChatConfig` (default: its defaults)."""
    from datetime import timedelta

    import redis.asyncio as aioredis

    from bot.chat import Chat
    from bot.persona import load_personas
    from bot.web.app import create_app
    from bot.web.chat_adapter import BotChatService, counter_trending
    from bot.web.metrics import TimedSearch, WebMetrics
    from ingest.daemon import trend_prefix
    from quipfeed.cli_bot import open_search
    from quipfeed.runtime import redis_url
    from quipfeed.settings import WebEnv
    from retrieval.trending import TrendCounter

    engine = await open_engine(settings, tiny)
    try:
        # The running ingest daemon's search when it owns the shard, else the shard opened here.
        async with open_search(settings) as search:
            with redis_url(settings) as url:
                # A pool that waits for a free connection instead of failing when all are busy
                # (hundreds of concurrent turns each hold one for a moment).
                pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=30)
                client = aioredis.Redis(connection_pool=pool)
                metrics = WebMetrics()
                timed = TimedSearch(search, metrics.retrieval.observe)
                chat = Chat(client, engine, timed, load_personas(), chat_config)
                counter = TrendCounter(client, trend_prefix(settings.redis.stream))
                window = timedelta(minutes=WebEnv().trending_window_minutes)
                service = BotChatService(chat, trending=counter_trending(counter, window))
                try:
                    yield create_app(service, web_options(settings), metrics)
                finally:
                    await client.aclose()
    finally:
        await engine.aclose()


async def serve(settings: Settings, listener: socket.socket, *, tiny: bool) -> None:
    import uvicorn

    from quipfeed.runtime import url_of

    async with web_app(settings, tiny=tiny) as app:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        typer.echo(f"quipfeed web on {url_of(listener)}/ (API docs at /docs)", err=True)
        await server.serve(sockets=[listener])


def web(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080; 0: any free one).")] = None,
    tiny: Annotated[
        bool, typer.Option(help="Answer with a tiny random model (a plumbing demo, gibberish).")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="A quipfeed.toml (default: ./quipfeed.toml).")
    ] = None,
) -> None:
    """Serve the chat API, the embeddable widget (/widget.js) and a demo page (/)."""
    from quipfeed.settings import load_settings

    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as e:
        typer.secho(f"error: bad settings: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    from quipfeed import logs
    from quipfeed.cli_bot import Refused
    from quipfeed.ports import PortUnavailable, listen

    # INFO by default: one `turn` and one `search` line per answer, each with its request id.
    logs.configure(os.environ.get("QUIPFEED_LOG_LEVEL", "INFO"))

    try:
        # Bound before the model and the store load: a taken port fails at once.
        listener = listen(host or settings.web.host, settings.web.port if port is None else port)
        import asyncio

        asyncio.run(serve(settings, listener, tiny=tiny))
    except KeyboardInterrupt:
        pass
    except (Refused, PortUnavailable) as e:  # no store, no daemon, …: the message says what to do
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


def _bench_module() -> ModuleType:
    # `bench/` sits at the repo root, next to the packages.
    try:
        return importlib.import_module("bench.web")
    except ImportError:
        path = Path(__file__).resolve().parents[1] / "bench" / "web.py"
        spec = importlib.util.spec_from_file_location("quipfeed_bench_web", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise typer.BadParameter(f"benchmark code not found at {path}") from None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


def bench_web(
    json_out: Annotated[bool, typer.Option("--json", help="Print figures as JSON.")] = False,
    streams: Annotated[int, typer.Option(min=1, max=5000, help="Concurrent SSE streams.")] = 200,
    samples: Annotated[int, typer.Option(min=1, max=100, help="First-token samples.")] = 5,
    browser: Annotated[
        bool, typer.Option(help="Also time first token painted in Chromium (/usr/bin/chromium).")
    ] = True,
) -> None:
    """First token at the API vs painted in the browser; concurrent SSE sessions held."""
    _bench_module().main(as_json=json_out, streams=streams, samples=samples, browser=browser)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add `web` to `app` and `web` to the `bench` sub-app."""
    app.command("web")(web)
    bench_app.command("web")(bench_web)
