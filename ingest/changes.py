"""What a normalised feed event asks of the index: put a post, or take posts away."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.post import Post


@dataclass(frozen=True)
class Upsert:
    """Insert a post, or replace it (an edit arrives as an upsert of the same id)."""

    post: Post


@dataclass(frozen=True)
class Delete:
    """Remove posts. Exactly one key is set: the post id, the source-local id that some
    delete events carry instead (Mastodon), or an account whose posts must all go."""

    post_id: str | None = None
    native_id: str | None = None
    author_id: str | None = None

    def __post_init__(self) -> None:
        keys = [k for k in (self.post_id, self.native_id, self.author_id) if k]
        if len(keys) != 1:
            raise ValueError("a Delete names exactly one of post_id, native_id, author_id")


Change = Upsert | Delete
