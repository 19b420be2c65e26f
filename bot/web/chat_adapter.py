"""`ChatService` over `bot.chat.Chat`: the conversation tree in Redis, real turns, real search."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Literal

from bot import chat as botchat
from bot.chat import Chat
from bot.limits import LimitExceeded
from bot.models import ConversationInfo, Message, Source
from bot.output import safe_url
from bot.search import SearchUnavailable
from bot.store import ConversationBusy, ConversationNotFound, MessageNotFound
from bot.web.service import (
    BadInput,
    Busy,
    CitationCard,
    Citations,
    ConversationSummary,
    ConversationView,
    Done,
    Limited,
    MessageView,
    NotFound,
    Notice,
    PersonaCard,
    Rating,
    Suggestions,
    Token,
    TrendItem,
    TurnEvent,
    Unavailable,
)
from inference.errors import EngineUnavailable, StreamInterrupted
from retrieval.post import Post
from retrieval.trending import TrendCounter

# Where trending topics come from (`counter_trending` over retrieval's counters); a server
# without one answers 503 and says so.
TrendingSource = Callable[[int], Awaitable[list[TrendItem]]]


def counter_trending(
    counter: TrendCounter, window: timedelta = timedelta(hours=1)
) -> TrendingSource:
    """Trending topics over the last `window`, from the counters the indexers keep."""

    async def trending(limit: int) -> list[TrendItem]:
        trends = await counter.trending(window, limit=limit)
        return [
            TrendItem(
                label=t.label,
                posts=t.count,
                growth=t.growth,
                sample=[_sample_card(i, s) for i, s in enumerate(t.posts, 1)],
            )
            for t in trends
        ]

    return trending


def _sample_card(number: int, sample: dict[str, Any]) -> CitationCard:
    return CitationCard(
        number=number,
        post_id=str(sample.get("id", "")),
        author=sample.get("author"),
        created_at=sample["created_at"],
        text=str(sample.get("text", "")),
        url=safe_url(sample.get("url")),
    )


def card(number: int, post: Post) -> CitationCard:
    return CitationCard(
        number=number,
        post_id=post.id,
        author=post.author,
        author_name=post.author_name,
        created_at=post.created_at,
        text=post.text,
        url=safe_url(post.url),
        platform=post.platform,
    )


def _summary(info: ConversationInfo) -> ConversationSummary:
    return ConversationSummary(
        id=info.id,
        title=info.title,
        persona=info.persona,
        created_at=info.created_at,
        updated_at=info.updated_at,
    )


class BotChatService:
    """The web API's view of `Chat`. Conversation ids and message ids are `bot`'s own."""

    def __init__(self, chat: Chat, *, trending: TrendingSource | None = None) -> None:
        self.chat = chat
        self._trending = trending

    # ---- personas, conversations ----

    async def personas(self) -> list[PersonaCard]:
        return [
            PersonaCard(name=p.name, description=p.description)
            for p in sorted(self.chat.personas.values(), key=lambda p: p.name)
        ]

    def _check_persona(self, name: str | None) -> None:
        if name is not None and name not in self.chat.personas:
            raise NotFound(f"no persona {name!r}; known: {', '.join(sorted(self.chat.personas))}")

    async def create_conversation(
        self, owner: str, persona: str | None = None, title: str | None = None
    ) -> ConversationSummary:
        self._check_persona(persona)
        info = await self.chat.new_conversation(owner, persona=persona)
        if title and title.strip():
            info = await self.chat.rename(info.id, owner, title)
        return _summary(info)

    async def list_conversations(self, owner: str) -> list[ConversationSummary]:
        return [_summary(i) for i in await self.chat.conversations(owner)]

    async def conversation(self, owner: str, conversation_id: str) -> ConversationView:
        with _mapped():
            info = await self.chat.store.get(conversation_id, owner)
            msgs = await self.chat.store.messages(conversation_id)
            path = await self.chat.store.path(conversation_id)
        return ConversationView(
            **_summary(info).model_dump(), messages=[_view(m, msgs) for m in path]
        )

    async def update_conversation(
        self, owner: str, conversation_id: str, *, title: str | None, persona: str | None
    ) -> ConversationSummary:
        self._check_persona(persona)
        with _mapped():
            info = await self.chat.store.get(conversation_id, owner)
            if title is not None:
                try:
                    info = await self.chat.rename(conversation_id, owner, title)
                except ValueError as e:
                    raise BadInput(str(e)) from e
            if persona is not None:
                info.persona = persona
                await self.chat.store.save_info(info)
        return _summary(info)

    async def delete_conversation(self, owner: str, conversation_id: str) -> None:
        with _mapped():
            await self.chat.delete(conversation_id, owner)

    async def export(
        self, owner: str, conversation_id: str, fmt: str = "json"
    ) -> dict[str, object] | str:
        with _mapped():
            try:
                return await self.chat.export(conversation_id, owner, fmt)
            except ValueError as e:
                raise BadInput(str(e)) from e

    # ---- turns ----

    async def send(
        self, owner: str, conversation_id: str, text: str, *, persona: str | None = None
    ) -> AsyncIterator[TurnEvent]:
        self._check_persona(persona)
        with _mapped():
            await self.chat.store.get(conversation_id, owner)
        return _turn(self.chat.ask(conversation_id, owner, text, persona=persona))

    async def regenerate(
        self, owner: str, conversation_id: str, message_id: str
    ) -> AsyncIterator[TurnEvent]:
        await self._message(owner, conversation_id, message_id, "assistant")
        return _turn(self.chat.regenerate(conversation_id, owner, message_id))

    async def edit(
        self, owner: str, conversation_id: str, message_id: str, text: str
    ) -> AsyncIterator[TurnEvent]:
        message = await self._message(owner, conversation_id, message_id, None)
        if message.role == "user":
            return _turn(self.chat.edit_question(conversation_id, owner, message_id, text))
        if not text.strip():
            raise BadInput("an edited answer must not be empty")
        return self._edit_answer(owner, conversation_id, message_id, text)

    async def _edit_answer(
        self, owner: str, conversation_id: str, message_id: str, text: str
    ) -> AsyncIterator[TurnEvent]:
        with _mapped():
            try:
                new = await self.chat.edit_answer(conversation_id, owner, message_id, text)
            except ValueError as e:
                raise BadInput(str(e)) from e
        yield Done(question_id=new.parent_id or "", message_id=new.id, finish_reason="edited")

    async def _message(
        self, owner: str, conversation_id: str, message_id: str, role: str | None
    ) -> Message:
        with _mapped():
            await self.chat.store.get(conversation_id, owner)
            message = await self.chat.store.message(conversation_id, message_id)
        if role is not None and message.role != role:
            kind = "a question" if role == "user" else "an answer"
            raise NotFound(f"message {message_id!r} is not {kind}")
        return message

    async def select(self, owner: str, conversation_id: str, message_id: str) -> ConversationView:
        with _mapped():
            await self.chat.select(conversation_id, owner, message_id)
        return await self.conversation(owner, conversation_id)

    async def feedback(
        self, owner: str, conversation_id: str, message_id: str, rating: Rating, note: str
    ) -> None:
        with _mapped():
            await self.chat.feedback(conversation_id, owner, message_id, rating, note)

    async def answer(
        self, persona: str | None, history: Sequence[tuple[str, str]], question: str
    ) -> AsyncIterator[TurnEvent]:
        self._check_persona(persona)
        return self._stateless(persona, history, question)

    async def _stateless(
        self, persona: str | None, history: Sequence[tuple[str, str]], question: str
    ) -> AsyncIterator[TurnEvent]:
        # `Chat` answers inside a stored conversation, so a stateless request borrows a
        # throw-away one holding its history as plain messages, deleted afterwards.
        owner = "stateless:" + secrets.token_urlsafe(9)
        info = await self.chat.new_conversation(owner, persona=persona)
        try:
            parent: str | None = None
            for role, text in history:
                if role not in ("user", "assistant") or (parent is None and role != "user"):
                    continue
                m = Message(parent_id=parent, role=role, content=text)  # type: ignore[arg-type]
                await self.chat.store.add(info, m)
                parent = m.id
            async for event in _turn(self.chat.ask(info.id, owner, question)):
                yield event
        finally:
            await self.chat.store.delete(info.id, owner)

    # ---- the feed ----

    async def trending(self, limit: int) -> list[TrendItem]:
        if self._trending is None:
            raise Unavailable("trending is not available on this server yet")
        return await self._trending(limit)

    async def search(self, text: str, k: int) -> list[CitationCard]:
        with _mapped():
            hits = await self.chat.search.search(text, k=k, since=None, as_of=None)
        return [card(i, h.post) for i, h in enumerate(hits, 1)]


class _mapped:
    """Turns `bot`'s errors into the web service's (a context manager, sync or async body)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None:
            return False
        mapped = _map(exc)
        if mapped is not exc and mapped is not None:
            raise mapped from exc
        return False


def _map(exc: BaseException) -> BaseException | None:
    if isinstance(exc, ConversationNotFound | MessageNotFound):
        return NotFound(str(exc))
    if isinstance(exc, ConversationBusy):
        return Busy(str(exc))
    if isinstance(exc, LimitExceeded):
        return Limited(str(exc), exc.retry_after)
    if isinstance(exc, KeyError):  # pick_persona's unknown persona
        return NotFound(str(exc.args[0]) if exc.args else "not found")
    if isinstance(exc, SearchUnavailable):  # /v1/search with the store away
        return Unavailable("the live feed is unreachable right now; try again shortly")
    # Model trouble a person can act on (no model set, server down or overloaded): say which.
    if isinstance(exc, EngineUnavailable):
        return Unavailable(str(exc))
    if isinstance(exc, StreamInterrupted):
        return Unavailable(f"the model stopped partway ({exc}); try again")
    return None


async def _turn(events: AsyncIterator[botchat.TurnEvent]) -> AsyncIterator[TurnEvent]:
    try:
        with _mapped():
            async for event in events:
                if isinstance(event, botchat.Delta):
                    if event.text:
                        yield Token(event.text)
                    continue
                if isinstance(event, botchat.Notice):
                    yield Notice(event.kind, event.text)
                    continue
                result = event.result
                yield Citations([card(s.number, s.post) for s in result.sources])
                yield Suggestions(list(result.suggestions))
                yield Done(result.question_id, result.message_id, "stop")
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def _cited(message: Message, msgs: dict[str, Message]) -> list[CitationCard]:
    asked = msgs.get(message.parent_id or "")
    context: Sequence[Source] = asked.context if asked is not None else ()
    by_number = {s.number: s for s in context}
    return [card(n, by_number[n].post) for n in message.cited if n in by_number]


def _view(m: Message, msgs: dict[str, Message]) -> MessageView:
    siblings = sorted(
        (s for s in msgs.values() if s.parent_id == m.parent_id), key=lambda s: (s.created_at, s.id)
    )
    ids = [s.id for s in siblings]
    return MessageView(
        id=m.id,
        parent_id=m.parent_id,
        role=m.role,
        content=m.content,
        created_at=m.created_at,
        version=ids.index(m.id) + 1,
        versions=len(ids),
        sibling_ids=ids,
        citations=_cited(m, msgs) if m.role == "assistant" else [],
        suggestions=m.suggestions,
        edited=m.edited,
        persona=m.persona,
        notice=botchat.FEED_UNAVAILABLE if m.role == "assistant" and m.feed_unavailable else None,
    )
