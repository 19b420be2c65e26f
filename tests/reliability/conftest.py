"""The conversation layer's real parts (Redis, a Qdrant Edge shard of real posts, personas),
shared with tests/bot so both suites run the same setup."""

from tests.bot.conftest import (
    feed,
    personas,
    post_vectors,
    posts,
    redis_client,
    shared_redis_url,
)

__all__ = ["feed", "personas", "post_vectors", "posts", "redis_client", "shared_redis_url"]
