"""The conversation layer's real parts (Redis, a Qdrant Edge shard of real posts, personas) and
the live web app, shared with tests/bot and tests/web so the suites run the same setup."""

from tests.bot.conftest import (
    feed,
    personas,
    post_vectors,
    posts,
    redis_client,
    shared_redis_url,
)
from tests.bot.web.conftest import live, web_posts, web_redis_url, web_store

__all__ = [
    "feed",
    "live",
    "personas",
    "post_vectors",
    "posts",
    "redis_client",
    "shared_redis_url",
    "web_posts",
    "web_redis_url",
    "web_store",
]
