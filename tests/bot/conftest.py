"""Fixtures for the conversation layer: real Redis, a real Qdrant Edge shard holding real posts,
and a tiny random MoE with a context window long enough for a persona's system prompt."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.chat import Chat, ChatConfig
from bot.persona import load_personas
from bot.search import LocalSearch
from inference.local import LocalEngine
from inference.tiny_model import build_tiny_moe
from retrieval.post import Post
from retrieval.search import Searcher
from tests.bot.scripted_engine import ScriptedEngine
from tests.conftest import BLUESKY_200

# The fixture posts are from 1–3 May 2024: the bot talks as if it were then.
AS_OF = datetime(2024, 5, 3, tzinfo=UTC)


@functools.cache
def _tiny_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="quipfeed-bot-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    # The default 1024-token window is shorter than a persona's system prompt in this
    # tokenizer (a 600-token BPE vocabulary: ~2 characters a token).
    return build_tiny_moe(root / "tiny-moe", context_window=8192)


@functools.cache
def _tiny_engine() -> LocalEngine:
    engine = LocalEngine.load(_tiny_dir(), device="cpu", max_batch_size=8)
    atexit.register(engine.close)
    return engine


@pytest.fixture(scope="session")
def tiny_bot_model() -> Path:
    return _tiny_dir()


@pytest.fixture(scope="session")
def tiny_bot_engine() -> LocalEngine:
    return _tiny_engine()


@pytest.fixture(scope="session")
def posts() -> list[Post]:
    return [Post.model_validate_json(line) for line in BLUESKY_200.read_text().splitlines()[:60]]


@pytest.fixture(scope="session")
def post_vectors(minilm, posts) -> list[list[float]]:  # type: ignore[no-untyped-def]
    return minilm.embed([p.text for p in posts]).tolist()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def feed(tmp_path_factory, minilm, posts, post_vectors) -> Iterator[LocalSearch]:  # type: ignore[no-untyped-def]
    """Search over a real Qdrant Edge shard holding 60 real Bluesky posts (read-only, shared:
    building a shard and embedding the posts once saves seconds a test)."""
    from retrieval.edge_store import EdgeStore

    store = EdgeStore(tmp_path_factory.mktemp("bot-feed") / "shard", minilm.dim)
    store.upsert(posts, post_vectors)
    yield LocalSearch(Searcher(store, minilm))
    store.close()


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """One real redis-server for the session (stopping one takes seconds); tests flush it."""
    from quipfeed.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("bot-redis"))
    yield server.ensure_running()
    server.stop()


@pytest.fixture
async def redis_client(shared_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(shared_redis_url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def personas():  # type: ignore[no-untyped-def]
    return load_personas()


@pytest.fixture
def scripted() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def make_chat(redis_client, feed, personas) -> Iterator:  # type: ignore[no-untyped-def, type-arg]
    def make(engine, **config):  # type: ignore[no-untyped-def]
        config.setdefault("max_reply_tokens", 24)
        return Chat(redis_client, engine, feed, personas, ChatConfig(**config))

    yield make
