"""What the HTTP API needs from the conversation layer: the `ChatService` seam and its data.

The API speaks only these types; `bot/web/chat_adapter.py` implements the protocol over `bot`'s
conversation tree and turns. Every call takes the `owner` (the session's user id): a
conversation belongs to the owner that created it, and any call naming another owner's
conversation raises `NotFound` (never "forbidden": ids of others' conversations do not leak).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, Field


class NotFound(LookupError):
    """No such conversation, message or persona for this owner."""


class BadInput(ValueError):
    """A request the caller must fix; the message says what is wrong, in plain words."""


class Busy(RuntimeError):
    """The conversation is answering another message; try again when it ends."""


class Limited(RuntimeError):
    """A usage limit was hit; `retry_after` seconds until it may succeed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(RuntimeError):
    """A part this server lacks or cannot reach right now (the message says which)."""


class PersonaCard(BaseModel):
    name: str
    description: str


class CitationCard(BaseModel):
    """A cited post as the widget shows it: who, when, what, where. Text is untrusted data."""

    number: int
    post_id: str
    author: str | None = None
    author_name: str | None = None
    created_at: datetime
    text: str
    url: str | None = None
    platform: str | None = None


class ConversationSummary(BaseModel):
    id: str
    title: str
    persona: str | None = None
    created_at: datetime
    updated_at: datetime


class MessageView(BaseModel):
    """A message on the selected path, with where it sits among its versions (siblings)."""

    id: str
    parent_id: str | None
    role: Literal["user", "assistant"]
    content: str
    created_at: datetime
    version: int = Field(description="1-based position among its siblings.")
    versions: int = Field(description="How many siblings (versions) there are, itself included.")
    sibling_ids: list[str]
    citations: list[CitationCard] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list)
    edited: bool = False
    persona: str | None = None
    notice: str | None = Field(
        default=None,
        description="Shown beside an answer as plain text, e.g. that the live feed was "
        "unreachable so it has no fresh posts behind it.",
    )


class ConversationView(ConversationSummary):
    """A conversation and the messages on its currently selected branch, oldest first."""

    messages: list[MessageView]


class TrendItem(BaseModel):
    label: str
    posts: int = Field(description="Posts mentioning it in the window.")
    growth: float | None = Field(
        default=None, description="Times its usual rate; null: new (no baseline)."
    )
    sample: list[CitationCard] = Field(default_factory=list)


Rating = Literal["up", "down"]


# What a turn yields, in this order: notices (if any), tokens, then citations, then
# suggestions, then done.
@dataclass(frozen=True)
class Notice:
    """Something to show beside the answer as plain text; `kind` "feed_unavailable": the
    live feed could not be searched, so the answer has no fresh posts behind it."""

    kind: str
    text: str


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Citations:
    cards: list[CitationCard]


@dataclass(frozen=True)
class Suggestions:
    items: list[str]


@dataclass(frozen=True)
class Done:
    question_id: str
    message_id: str
    finish_reason: str


TurnEvent = Notice | Token | Citations | Suggestions | Done


class ChatService(Protocol):
    """The conversation layer as the web API uses it.

    Turn methods (`send`, `regenerate`, `edit`, `answer`) check what they can at once (raising
    `NotFound`/`BadInput`), then return an async iterator of `TurnEvent`s; a failure found later
    (a limit, a busy conversation) is raised by the iterator. Closing the iterator early stops
    generation (`bot` keeps a turn only when it completes).
    """

    async def personas(self) -> list[PersonaCard]: ...

    async def create_conversation(
        self, owner: str, persona: str | None = None, title: str | None = None
    ) -> ConversationSummary: ...

    async def list_conversations(self, owner: str) -> list[ConversationSummary]: ...

    async def conversation(self, owner: str, conversation_id: str) -> ConversationView: ...

    async def update_conversation(
        self, owner: str, conversation_id: str, *, title: str | None, persona: str | None
    ) -> ConversationSummary: ...

    async def delete_conversation(self, owner: str, conversation_id: str) -> None: ...

    async def export(
        self, owner: str, conversation_id: str, fmt: str = "json"
    ) -> dict[str, object] | str:
        """`json`: the whole tree (every version of every message) as a dict; `markdown`: the
        selected line as text."""
        ...

    async def send(
        self, owner: str, conversation_id: str, text: str, *, persona: str | None = None
    ) -> AsyncIterator[TurnEvent]:
        """Ask `text` after the selected branch's last message."""
        ...

    async def regenerate(
        self, owner: str, conversation_id: str, message_id: str
    ) -> AsyncIterator[TurnEvent]:
        """A new version of assistant message `message_id` (a sibling), selected."""
        ...

    async def edit(
        self, owner: str, conversation_id: str, message_id: str, text: str
    ) -> AsyncIterator[TurnEvent]:
        """Edit a message as a new version. A question is answered afresh; an edited answer
        yields only `Done` (the conversation continues from it)."""
        ...

    async def select(self, owner: str, conversation_id: str, message_id: str) -> ConversationView:
        """Make `message_id` the selected version among its siblings."""
        ...

    async def feedback(
        self, owner: str, conversation_id: str, message_id: str, rating: Rating, note: str
    ) -> None: ...

    async def answer(
        self, persona: str | None, history: Sequence[tuple[str, str]], question: str
    ) -> AsyncIterator[TurnEvent]:
        """A stateless turn (the OpenAI facade): `history` is (role, text) pairs, oldest first,
        role "user" or "assistant"; nothing is stored."""
        ...

    async def trending(self, limit: int) -> list[TrendItem]: ...

    async def search(self, text: str, k: int) -> list[CitationCard]: ...
