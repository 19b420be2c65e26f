"""Filling an evaluation shard, with the post vectors cached on disk between runs.

Embedding the full dev set (~23k posts) with all-MiniLM-L6-v2 takes minutes on two cores; the
vectors only change when the embedder or the posts do, so they are kept in `cache_dir` under a
key made of both (the embedder's name and a hash of every embedded text, in order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from retrieval import schema
from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder, Vectors
from retrieval.post import Post

EMBED_BATCH = 256
UPSERT_BATCH = 512


def cache_key(embedder_name: str, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(embedder_name.encode())
    for text in texts:
        digest.update(b"\x00" + text.encode("utf-8", errors="replace"))
    return digest.hexdigest()[:32]


def embed_cached(
    texts: Sequence[str],
    embedder: Embedder,
    cache_dir: Path | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Vectors:
    """`embedder.embed(texts)`, read from `cache_dir` when this embedder embedded these texts
    before (written there afterwards; no cache without a `cache_dir`)."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(embedder.name, texts)}.npy"
        if path.is_file():
            rows = np.load(path)
            if rows.shape == (len(texts), embedder.dim):
                return rows.astype(np.float32)
    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        parts.append(embedder.embed(list(texts[start : start + EMBED_BATCH])))
        if progress is not None:
            progress("embedding", min(start + EMBED_BATCH, len(texts)), len(texts))
    rows = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, rows)
        tmp.replace(path)
    return rows


def index_posts(
    store: EdgeStore,
    posts: Sequence[Post],
    embedder: Embedder,
    *,
    cache_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Embed (or read cached vectors for) `posts` and write them all to `store`."""
    vectors = embed_cached([schema.dense_text(p) for p in posts], embedder, cache_dir, progress)
    for start in range(0, len(posts), UPSERT_BATCH):
        batch = posts[start : start + UPSERT_BATCH]
        store.upsert(batch, vectors[start : start + UPSERT_BATCH].tolist())
