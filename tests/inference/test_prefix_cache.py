"""The prefix KV cache: LRU bound in tokens, longest-prefix lookup, and correctness when many
conversations use (and evict) it at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from inference.local import LocalEngine
from inference.messages import ChatMessage, SamplingParams
from inference.prefix_cache import KV, PrefixCache

GREEDY = SamplingParams(max_tokens=10, temperature=0)


def _kv(n: int) -> KV:
    # One layer, one head, n positions, head_dim 2; the value at position i is i.
    t = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).repeat(1, 1, 1, 2)
    return [(t, t.clone())]


def test_lookup_returns_the_longest_cached_prefix_leaving_the_last_token_to_run() -> None:
    cache = PrefixCache(100)
    cache.store([1, 2, 3], _kv(3))
    cache.store([1, 2, 3, 4, 5], _kv(5))
    kv, n = cache.lookup([1, 2, 3, 4, 5, 6])
    assert n == 5 and kv is not None and kv[0][0].shape[-2] == 5
    # The whole prompt is cached: one token is still left to compute the next-token logits.
    _, n = cache.lookup([1, 2, 3])
    assert n == 2
    assert cache.lookup([9, 9]) == (None, 0)


def test_cache_stays_within_its_token_bound_evicting_least_recently_used() -> None:
    cache = PrefixCache(10)
    cache.store([1, 1, 1, 1], _kv(4))
    cache.store([2, 2, 2, 2], _kv(4))
    cache.lookup([1, 1, 1, 1, 7])  # [1,1,1,1] is now the most recently used
    cache.store([3, 3, 3, 3], _kv(4))  # 12 > 10 tokens: the LRU entry, [2,2,2,2], goes
    assert cache.tokens <= 10
    assert cache.lookup([2, 2, 2, 2, 7]) == (None, 0)
    assert cache.lookup([1, 1, 1, 1, 7])[1] == 4
    cache.store(list(range(50)), _kv(50))  # larger than the whole cache: not stored
    assert cache.tokens <= 10


async def test_concurrent_conversations_under_eviction_match_uncached_greedy_output(
    tiny_model_path: Path, tiny_engine: LocalEngine
) -> None:
    # Room for about two conversations' prefixes while eight run at once: entries are evicted
    # while other requests are prefilling and decoding from them.
    cached = LocalEngine.load(
        tiny_model_path, device="cpu", prefix_cache_tokens=400, max_batch_size=8
    )
    persona = ChatMessage(role="system", content="you read the public feed and cite posts " * 4)
    try:
        histories = [[persona, ChatMessage(role="user", content=f"news {i}?")] for i in range(8)]
        for turn in range(2):
            warm = await asyncio.gather(*(cached.generate(h, GREEDY) for h in histories))
            cold = [await tiny_engine.generate(h, GREEDY) for h in histories]
            assert [w.text for w in warm] == [c.text for c in cold]
            histories = [
                [
                    *h,
                    ChatMessage(role="assistant", content=w.text),
                    ChatMessage(role="user", content=f"more {turn}"),
                ]
                for h, w in zip(histories, warm, strict=True)
            ]
        assert cached.stats.cached_tokens > 0  # the shared persona was reused
        assert cached.prefix_cache is not None and cached.prefix_cache.tokens <= 400
    finally:
        await cached.aclose()
