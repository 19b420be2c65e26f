"""`quipfeed bot discord`: the Discord bot. `quipfeed/cli.py` calls `register(app)`; `quipfeed up`
may call `run_discord(settings)` when `QUIPFEED_DISCORD__TOKEN` is set.

Composition lives here: settings → Redis, store and search, engine → `bot.chat.Chat` →
`bot.discord.QuipBot`. `/feed add` specs are validated with `ingest.sources.spec.open_source`
(the bot itself never imports `ingest`). Discord options the settings tree does not hold yet are
read from the environment under the names they would have there:
`QUIPFEED_DISCORD__DEV_GUILD_ID`, `__ALLOW_DMS`, `__COOLDOWN_S`, `__EDIT_INTERVAL_S`,
`__JETSTREAM_URL`, `__FEED_GUILD_IDS` (JSON list), and `__HOST`/`__PORT` for the bot's
optional `/healthz` + `/metrics` endpoint (off unless a port is given; 127.0.0.1 by default).
The token is never printed or logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Settings (pydantic) load when the command runs, not with `quipfeed --help`.
if TYPE_CHECKING:
    from quipfeed.settings import DiscordEnv, Settings

log = logging.getLogger(__name__)


def discord_options(env: DiscordEnv | None = None) -> Any:
    from bot.discord.options import DiscordOptions
    from quipfeed.settings import DiscordEnv

    env = env or DiscordEnv()
    values: dict[str, Any] = {
        "dev_guild_id": env.dev_guild_id,
        "allow_dms": env.allow_dms,
        "cooldown_s": env.cooldown_s,
        "edit_interval_s": env.edit_interval_s,
        "feed_guild_ids": env.feed_guild_ids,
    }
    if env.jetstream_url:
        values["jetstream_url"] = env.jetstream_url
    return DiscordOptions(**values)


def validate_feed_spec(spec: str) -> None:
    """Raises `SourceSpecError` (a `ValueError`) for a spec the ingester would refuse. Builds the
    source object only to check it: nothing connects anywhere."""
    from ingest.sources.spec import open_source

    if spec.strip().startswith("jsonl:"):
        # A Discord admin must not point the server's ingester at its local files.
        raise ValueError("jsonl: sources read local files; add them in the server's config")
    open_source(spec)


def _token(settings: Settings) -> str:
    if settings.discord.token is None or not settings.discord.token.get_secret_value().strip():
        raise typer.BadParameter(
            "no Discord token: set QUIPFEED_DISCORD__TOKEN (see docs/discord.md)"
        )
    return settings.discord.token.get_secret_value().strip()


async def run_discord_bot(
    settings: Settings,
    chat: Any,
    client: Any,
    *,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Run the bot over an existing `bot.chat.Chat` and Redis client until cancelled. With a
    `port` (else `QUIPFEED_DISCORD__PORT`), `/healthz` and `/metrics` are served on
    `host` (else `QUIPFEED_DISCORD__HOST`, default 127.0.0.1) while it runs."""
    import contextlib

    import discord

    from bot.discord import DiscordState, FeedRegistry, QuipBot, Turns
    from bot.discord.health import HealthServer
    from quipfeed.settings import DiscordEnv

    token = _token(settings)
    from ingest.daemon import trend_prefix
    from retrieval.trending import TrendCounter

    bot = QuipBot(
        Turns(chat),
        DiscordState(client),
        FeedRegistry(client, validate_feed_spec),
        discord_options(),
        trends=TrendCounter(client, trend_prefix(settings.redis.stream)),
    )
    env = DiscordEnv()
    port = port if port is not None else env.port
    try:
        async with contextlib.AsyncExitStack() as stack:
            if port is not None:
                health = HealthServer(bot, bot.metrics, host=host or env.host, port=port)
                await stack.enter_async_context(health)
                log.info("Discord bot health and metrics", extra={"url": health.url})
            async with bot:
                await bot.start(token)
    except OSError as e:  # the health port is taken or not bindable
        raise typer.BadParameter(
            f"cannot serve /healthz and /metrics on port {port}: {e.strerror or e}; "
            "pick a free port with --port"
        ) from None
    except discord.LoginFailure:
        raise typer.BadParameter(
            "Discord rejected the token (QUIPFEED_DISCORD__TOKEN); copy it again from "
            "the Developer Portal's Bot page"
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise typer.BadParameter(
            "enable the Message Content intent for this application (Developer Portal → "
            "Bot → Privileged Gateway Intents)"
        ) from None


async def run_discord(
    settings: Settings, *, tiny: bool = False, host: str | None = None, port: int | None = None
) -> None:
    """Run the bot until it is stopped (Ctrl-C / SIGTERM / `bot.close()`). Search goes to the
    running ingest daemon when one owns the store, else to the store opened here."""
    import redis.asyncio as aioredis

    from bot.chat import Chat
    from bot.persona import load_personas
    from quipfeed.cli_bot import open_search
    from quipfeed.cli_web import open_engine
    from quipfeed.runtime import redis_url

    _token(settings)
    engine = await open_engine(settings, tiny)
    try:
        async with open_search(settings) as search:
            with redis_url(settings) as url:
                client = aioredis.from_url(url)
                try:
                    await run_discord_bot(
                        settings,
                        Chat(client, engine, search, load_personas()),
                        client,
                        host=host,
                        port=port,
                    )
                finally:
                    await client.aclose()
    finally:
        await engine.aclose()


def bot_discord(
    tiny: Annotated[
        bool, typer.Option(help="Answer with a tiny random model (a plumbing demo, gibberish).")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="A quipfeed.toml (default: ./quipfeed.toml).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address for /healthz and /metrics (default 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve /healthz and /metrics on this port (default: off)."
        ),
    ] = None,
) -> None:
    """Run the Discord bot (token from QUIPFEED_DISCORD__TOKEN)."""
    from quipfeed.settings import DiscordEnv, load_settings

    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as e:
        typer.secho(f"error: bad settings: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    from quipfeed import logs
    from quipfeed.ports import PortUnavailable, listen

    env = DiscordEnv()
    if port is not None or env.port is not None:
        # Checked before the model loads and the bot connects: a taken port fails at once.
        health_host, health_port = host or env.host, port if port is not None else env.port
        try:
            listen(health_host, health_port or 0).close()
        except PortUnavailable as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None

    logs.configure(os.environ.get("QUIPFEED_LOG_LEVEL", "INFO"))
    try:
        import asyncio

        asyncio.run(run_discord(settings, tiny=tiny, host=host, port=port))
    except typer.BadParameter as e:
        typer.secho(f"error: {e.message}", fg="red", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add the `bot` group with `discord` to `app`."""
    bot_app = typer.Typer(help="Chat surfaces: run quipfeed as a bot.", no_args_is_help=True)
    bot_app.command("discord")(bot_discord)
    app.add_typer(bot_app, name="bot")
