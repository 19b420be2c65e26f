"""The conversation's data: messages in a tree, the posts a turn cited, what a turn returns."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from retrieval.post import Post


def new_id() -> str:
    """A short random id (URL-safe), unique enough for messages and conversations."""
    return secrets.token_urlsafe(9)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Source(BaseModel):
    """A post the context gave the model under `number`."""

    number: int
    post: Post

    @property
    def url(self) -> str | None:
        return self.post.url


class Feedback(BaseModel):
    rating: Literal["up", "down"]
    note: str = Field(default="", max_length=2_000)
    user: str
    at: datetime = Field(default_factory=utcnow)


class Message(BaseModel):
    """One node of a conversation tree.

    `parent_id` is None for a conversation's first question. Siblings (same parent) are versions:
    a regenerated or edited answer, an edited question. A user message keeps `sent`, the exact
    text the model saw (fresh context + question), and `context`, the posts behind its numbers,
    so later turns resend history byte for byte and a regenerated answer cites the same posts.
    """

    id: str = Field(default_factory=new_id)
    parent_id: str | None = None
    role: Literal["user", "assistant"]
    content: str
    created_at: datetime = Field(default_factory=utcnow)
    # user messages
    sent: str | None = None
    query: str | None = None
    context: list[Source] = Field(default_factory=list)
    # Both roles: the post store could not be searched for this question, so the answer has no
    # fresh posts behind it (a regenerated answer searches again).
    feed_unavailable: bool = False
    # assistant messages
    raw: str | None = Field(default=None, description="The model's text before links were added.")
    cited: list[int] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list)
    persona: str | None = None
    model: str | None = None
    edited: bool = False
    tokens: int = 0
    feedback: list[Feedback] = Field(default_factory=list)

    def model_text(self) -> str:
        """What this message was to the model: the sent prompt, or the answer as generated."""
        if self.role == "user":
            return self.sent or self.content
        return self.raw if self.raw is not None else self.content


class ConversationInfo(BaseModel):
    id: str = Field(default_factory=new_id)
    user: str
    title: str = "New conversation"
    persona: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TurnResult(BaseModel):
    """One finished reply: its text with citation links, the posts it cited, follow-ups."""

    conversation_id: str
    question_id: str
    message_id: str
    text: str
    sources: list[Source]
    suggestions: list[str]
    query: str | None
    searched: bool
    tokens: int = 0
    notice: str | None = Field(
        default=None, description="Shown beside the answer, e.g. the feed was unreachable."
    )

    def as_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["sources"] = [
            {
                "number": s.number,
                **s.post.model_dump(mode="json", exclude={"raw"}, exclude_none=True),
            }
            for s in self.sources
        ]
        return data
