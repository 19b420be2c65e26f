"""Thread context: a hit that replies to or quotes another post brings that post along.

The parent is attached to the hit (`Hit.context`), not ranked among the results: it is there so
a reader (or a model) sees what "Agreed, this is huge" agrees with. Parents come from the index
only (one batched `store.get`); a parent that was never ingested, or was deleted, is simply
absent. Parents created after the search's `as_of` are left out, so a replay never leaks the
future.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from retrieval.post import Post
from retrieval.store import Hit, PostStore


def parent_ids(post: Post) -> list[str]:
    """The posts `post` answers or quotes, reply parent first; never itself."""
    out: list[str] = []
    for pid in (post.reply_to, post.quote_of):
        if pid and pid != post.id and pid not in out:
            out.append(pid)
    return out


def attach_parents(
    hits: Sequence[Hit], store: PostStore, as_of: datetime | None = None
) -> list[Hit]:
    """`hits` with each hit's indexed parents in `Hit.context` (order of hits unchanged)."""
    wanted = list(dict.fromkeys(pid for h in hits for pid in parent_ids(h.post)))
    if not wanted:
        return list(hits)
    found = {p.id: p for p in store.get(wanted) if as_of is None or p.created_at <= as_of}
    out: list[Hit] = []
    for hit in hits:
        parents = tuple(found[pid] for pid in parent_ids(hit.post) if pid in found)
        out.append(replace(hit, context=parents) if parents else hit)
    return out
