"""`quipfeed bot discord`: the command, its settings, and `/feed` validated by the real ingester."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from bot.discord.feed_list import FeedError, FeedRegistry, to_spec
from quipfeed.cli_discord import discord_options, register, validate_feed_spec
from quipfeed.settings import DiscordEnv


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def version() -> None:  # a second command, so `bot` is a sub-command as in the real CLI
        typer.echo("0")

    register(app)
    return app


def test_bot_discord_without_a_token_says_how_to_set_it(monkeypatch, tmp_path):
    monkeypatch.delenv("QUIPFEED_DISCORD__TOKEN", raising=False)
    monkeypatch.setenv("QUIPFEED_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(_app(), ["bot", "discord"])
    assert result.exit_code == 2
    assert "QUIPFEED_DISCORD__TOKEN" in result.output


def test_discord_options_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUIPFEED_DISCORD__DEV_GUILD_ID", "123456789012345678")
    monkeypatch.setenv("QUIPFEED_DISCORD__ALLOW_DMS", "true")
    monkeypatch.setenv("QUIPFEED_DISCORD__COOLDOWN_S", "2.5")
    options = discord_options(DiscordEnv())
    assert options.dev_guild_id == 123456789012345678
    assert options.allow_dms is True and options.cooldown_s == 2.5


@pytest.mark.parametrize(
    ("kind", "target", "spec"),
    [
        (
            "bluesky-tag",
            "#Rust",
            "jetstream:wss://jetstream2.us-east.bsky.network/subscribe?keyword=rust",
        ),
        (
            "bluesky-account",
            "did:plc:abc123",
            "jetstream:wss://jetstream2.us-east.bsky.network/subscribe?did=did:plc:abc123",
        ),
        ("mastodon-tag", "#python@mastodon.social", "mastodon:https://mastodon.social?tag=python"),
        ("rss", "https://example.org/feed.xml", "rss:https://example.org/feed.xml"),
    ],
)
def test_what_an_admin_types_becomes_a_spec_the_ingester_accepts(kind, target, spec):
    made, _label = to_spec(kind, target)
    assert made == spec
    validate_feed_spec(made)  # the real ingest.sources.spec.open_source


async def test_the_registry_refuses_what_the_ingester_would_refuse(redis_client):
    feeds = FeedRegistry(redis_client, validate_feed_spec)
    with pytest.raises(FeedError, match="unknown source"):
        await feeds.add("gopher:example.org", "x", added_by=1, guild=2)
    with pytest.raises(FeedError, match="local files"):
        await feeds.add("jsonl:/etc/passwd", "x", added_by=1, guild=2)
    with pytest.raises(FeedError, match="DID"):
        to_spec("bluesky-account", "alice.bsky.social")
    assert await feeds.add("rss:https://example.org/feed.xml", "x", added_by=1, guild=2)
    assert not await feeds.add("rss:https://example.org/feed.xml", "x", added_by=1, guild=2)
    assert [f.spec for f in await feeds.list()] == ["rss:https://example.org/feed.xml"]


def test_the_documented_invite_permissions_are_the_ones_the_bot_needs():
    import re
    from pathlib import Path

    import discord

    doc = (Path(__file__).parents[3] / "docs" / "discord.md").read_text()
    value = int(re.search(r"Permissions integer `(\d+)`", doc)[1])  # type: ignore[index]
    needed = discord.Permissions(
        view_channel=True,
        send_messages=True,
        embed_links=True,
        read_message_history=True,
        use_application_commands=True,
        send_messages_in_threads=True,
    )
    assert value == needed.value
    assert not discord.Permissions(value).mention_everyone
