"""An LRU cache of prompt-prefix KV states for the local engine (its small RadixAttention).

Entries map a token sequence to per-layer (keys, values) tensors of shape
`[1, kv_heads, seq, head_dim]`. Tensors are never mutated in place by transformers' dynamic
cache (it grows by concatenation), so a hit hands out views, not copies.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]


class PrefixCache:
    """Holds at most `max_tokens` cached prompt tokens in total, evicting least recently used."""

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return self._tokens

    def lookup(self, ids: Sequence[int]) -> tuple[KV | None, int]:
        """The KV state of the longest cached prefix of `ids`, cut to at most `len(ids) - 1`
        tokens (the last prompt token must run to give logits), and its length; `(None, 0)` on a
        miss."""
        limit = len(ids) - 1
        best_key: tuple[int, ...] | None = None
        best = 0
        with self._lock:
            for key in self._entries:
                n = 0
                for a, b in zip(key, ids[:limit], strict=False):
                    if a != b:
                        break
                    n += 1
                if n > best:
                    best, best_key = n, key
            if best_key is None:
                self.misses += 1
                return None, 0
            self._entries.move_to_end(best_key)
            kv = self._entries[best_key]
            self.hits += 1
        return [(k[..., :best, :], v[..., :best, :]) for k, v in kv], best

    def store(self, ids: Sequence[int], kv: KV) -> None:
        """Remember `kv` as the state after `ids` (a prompt that was just prefilled)."""
        key = tuple(ids)
        if len(key) > self.max_tokens:
            return
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key] = kv
            self._tokens += len(key)
            while self._tokens > self.max_tokens:
                old, _ = self._entries.popitem(last=False)
                self._tokens -= len(old)
