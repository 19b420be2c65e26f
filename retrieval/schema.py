"""The collection schema both store backends share: vector names, payload layout, indexes.

A point is one post: id `point_id(post.id)`, a dense vector "dense" (cosine, the embedder's
size), a sparse vector "bm25" (IDF applied by the store), and the post as payload.
Sparse vectors are computed here, client-side, with `qdrant_edge.Bm25`, so an Edge shard and a
Qdrant server index byte-identical sparse vectors and rank alike.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import qdrant_edge

from retrieval.post import Post

DENSE = "dense"
SPARSE = "bm25"

CREATED_AT = "created_at"
# Epoch seconds copy of created_at: easy to read back and to sort on in any client.
CREATED_TS = "created_ts"
KEYWORD_FIELDS = ("author", "author_id", "lang", "hashtags", "source", "native_id")
DATETIME_FIELDS = (CREATED_AT,)
FLOAT_FIELDS = (CREATED_TS,)

# `raw` is the source event: bulky, never searched, and a post rebuilt without it is complete
# for every reader (answers cite `text`, `url`, `author`).
_DROPPED_FIELDS = {"raw"}

_bm25_lock = threading.Lock()
_bm25: qdrant_edge.Bm25 | None = None


def _model() -> qdrant_edge.Bm25:
    global _bm25
    with _bm25_lock:
        if _bm25 is None:
            # Defaults: English tokenizer, stop words and stemmer; k=1.2, b=0.75.
            # avg_len 256 is for documents; posts are ~30 tokens, so tell BM25 that.
            _bm25 = qdrant_edge.Bm25(qdrant_edge.Bm25Config(avg_len=30.0))
        return _bm25


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with a Z suffix and microseconds, the form Qdrant's datetime index parses."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sparse_text(post: Post) -> str:
    """What BM25 indexes: the text plus who wrote it, so "what is @alice saying" can match."""
    parts = [post.text]
    if post.author:
        parts.append(post.author)
    if post.author_name:
        parts.append(post.author_name)
    if post.hashtags:
        parts.append(" ".join(post.hashtags))
    return "\n".join(parts)


def dense_text(post: Post) -> str:
    """What the embedder sees for a post (ingest and evaluation must embed the same thing)."""
    return post.text


def sparse_document(post: Post) -> tuple[list[int], list[float]]:
    vec = _model().embed_document(sparse_text(post))
    return list(vec.indices), list(vec.values)


def sparse_query(text: str) -> tuple[list[int], list[float]]:
    vec = _model().embed_query(text)
    return list(vec.indices), list(vec.values)


# The whole post travels as one JSON string: Qdrant Edge's Python binding converts payload
# values key by key (~20 µs each), so 16 keys cost ~300 µs a point and one string ~45 µs.
# Only the fields that filters, indexes and decay read are top-level keys.
DOC = "doc"


def post_payload(post: Post) -> dict[str, Any]:
    payload: dict[str, Any] = {
        DOC: post.model_dump_json(exclude_none=True, exclude=_DROPPED_FIELDS),
        CREATED_AT: rfc3339(post.created_at),
        CREATED_TS: post.created_at.timestamp(),
    }
    for name in KEYWORD_FIELDS:
        value = getattr(post, name)
        if value:
            payload[name] = value
    return payload


def post_from_payload(payload: dict[str, Any]) -> Post:
    if DOC in payload:
        return Post.model_validate_json(payload[DOC])
    # A point written before payloads carried `doc`: the post's fields are the payload.
    return Post.model_validate({k: v for k, v in payload.items() if k != CREATED_TS})
