"""A turn of conversation, shared by every surface.

plan → retrieve → prompt → stream → cite → remember.

`Chat` holds the seams (an `Engine`, a `PostSearch`, Redis) and the personas. Each turn-making
method is an async iterator of `Delta` (safe text to show now) ending with one `Done` carrying
the `TurnResult`; the turn is stored only when it completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from bot import export
from bot.citations import link_citations
from bot.limits import Limits, RateLimiter
from bot.models import ConversationInfo, Feedback, Message, Source, TurnResult
from bot.output import SafeStream, safe_text
from bot.persona import Persona, pick_persona
from bot.search import PostSearch, SearchUnavailable
from bot.search_plan import SearchPlan, plan_search
from bot.store import ConversationStore, MessageNotFound
from bot.suggest import suggest_followups
from inference.engine import Engine
from inference.layout import turn_messages
from inference.messages import ChatMessage, SamplingParams
from retrieval.context import pack_context

log = logging.getLogger(__name__)

TITLE_CHARS = 60

# What a person is told when the post store could not be searched (shown beside the answer,
# never part of it), and what the model is told in place of the feed block.
FEED_UNAVAILABLE = (
    "I can't reach the live feed right now, so this answer has no fresh posts behind it."
)
FEED_UNAVAILABLE_PROMPT = (
    "The live feed could not be searched for this question: the post store is unreachable "
    "right now, so no feed posts are given. Do not claim to know what is trending or what "
    "people are posting now, and cite no posts. Say briefly that you cannot see the feed at "
    "the moment, then help with what you can from general knowledge."
)


class ChatConfig(BaseModel):
    k: int = Field(default=8, ge=1, le=50, description="Posts retrieved per search.")
    since: timedelta | None = Field(default=None, description="Only posts this recent.")
    context_tokens: int = Field(default=1_500, ge=100, description="Budget for the feed block.")
    max_reply_tokens: int | None = Field(default=None, ge=1, description="Caps the persona's.")
    suggestions: bool = True
    suggest_timeout: float = Field(default=30.0, gt=0)
    lock_wait: float = Field(default=0.0, ge=0, description="Wait this long for a running turn.")
    limits: Limits = Field(default_factory=Limits)


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Notice:
    """Something the person should see beside this answer (before its first `Delta`).

    `kind` is "feed_unavailable" (the post store could not be searched; `text` says so)."""

    kind: str
    text: str


@dataclass(frozen=True)
class Done:
    result: TurnResult


TurnEvent = Delta | Notice | Done


class Chat:
    def __init__(
        self,
        client: aioredis.Redis,
        engine: Engine,
        search: PostSearch,
        personas: dict[str, Persona],
        config: ChatConfig | None = None,
    ) -> None:
        self.engine, self.search, self.personas = engine, search, personas
        self.config = config or ChatConfig()
        self.store = ConversationStore(client)
        self.limiter = RateLimiter(client, self.config.limits)

    # ---- conversations ------------------------------------------------------------------------

    async def new_conversation(self, user: str, *, persona: str | None = None) -> ConversationInfo:
        pick_persona(self.personas, persona)  # refuse an unknown persona now, not at the turn
        return await self.store.create(user, persona=persona)

    async def path(self, cid: str, user: str) -> list[Message]:
        """The selected line of the conversation, first question to latest message."""
        await self.store.get(cid, user)
        return await self.store.path(cid)

    async def conversations(self, user: str) -> list[ConversationInfo]:
        return await self.store.list_for(user)

    async def rename(self, cid: str, user: str, title: str) -> ConversationInfo:
        return await self.store.rename(cid, user, title)

    async def delete(self, cid: str, user: str) -> None:
        await self.store.delete(cid, user)

    async def export(self, cid: str, user: str, fmt: str = "markdown") -> str | dict[str, object]:
        """`fmt` "markdown": the selected line as text; "json": the whole tree as a dict."""
        info = await self.store.get(cid, user)
        messages = await self.store.messages(cid)
        line = await self.store.path(cid)
        if fmt == "json":
            return export.to_json(info, messages, line)
        if fmt != "markdown":
            raise ValueError("export format must be markdown or json")
        counts: dict[str | None, int] = {}
        for m in messages.values():
            counts[m.parent_id] = counts.get(m.parent_id, 0) + 1
        return export.to_markdown(info, line, {m.id: counts[m.parent_id] for m in line})

    # ---- turns --------------------------------------------------------------------------------

    async def ask(
        self,
        cid: str,
        user: str,
        text: str,
        *,
        channel: str | None = None,
        persona: str | None = None,
        as_of: datetime | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """Answer `text` as the next message on the selected line of the conversation."""
        async for event in self._turn(cid, user, channel, persona, as_of, question=text, base=None):
            yield event

    async def edit_question(
        self,
        cid: str,
        user: str,
        message_id: str,
        text: str,
        *,
        channel: str | None = None,
        persona: str | None = None,
        as_of: datetime | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """Ask `text` in place of question `message_id` (a sibling version), and answer it."""
        old = await self._message(cid, user, message_id, "user")
        async for event in self._turn(
            cid,
            user,
            channel,
            persona,
            as_of,
            question=text,
            base=old.parent_id or "",
            replace=True,
        ):
            yield event

    async def regenerate(
        self,
        cid: str,
        user: str,
        message_id: str | None = None,
        *,
        channel: str | None = None,
        persona: str | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """A new version of answer `message_id` (default: the latest), from the same question
        and the same posts."""
        if message_id is None:
            answers = [m for m in await self.path(cid, user) if m.role == "assistant"]
            if not answers:
                raise MessageNotFound("nothing to regenerate yet")
            message_id = answers[-1].id
        old = await self._message(cid, user, message_id, "assistant")
        assert old.parent_id is not None
        async for event in self._turn(
            cid, user, channel, persona, None, question=None, base=old.parent_id
        ):
            yield event

    async def _turn(
        self,
        cid: str,
        user: str,
        channel: str | None,
        persona_name: str | None,
        as_of: datetime | None,
        *,
        question: str | None,
        base: str | None,
        replace: bool = False,
    ) -> AsyncIterator[TurnEvent]:
        info = await self.store.get(cid, user)
        persona = pick_persona(self.personas, persona_name or info.persona)
        scopes = [f"user:{user}"] + ([f"channel:{channel}"] if channel else [])
        await self.limiter.admit(scopes)
        async with self.store.lock(cid, wait=self.config.lock_wait):
            msgs = await self.store.messages(cid)
            if question is None:  # regenerate: the question exists, with its posts
                asked = msgs[base or ""]
                history = _line_to(msgs, asked.parent_id)
                plan = SearchPlan(asked.query is not None, asked.query, "regenerate")
                if asked.feed_unavailable:
                    # The feed was unreachable when it was asked: search again now. The
                    # question is updated in place (its earlier answers cited nothing).
                    asked = await self._with_context(asked, plan, persona, None)
            else:
                parent = (base or None) if replace else _open_parent(await self.store.path(cid))
                history = _line_to(msgs, parent)
                plan = plan_search(
                    question, [m.query for m in history if m.query], has_history=bool(history)
                )
                asked = await self._ask_message(question, parent, plan, persona, as_of)
            done: Done | None = None
            async for event in self._answer(info, persona, history, asked, plan, scopes):
                if isinstance(event, Done):
                    done = event
                else:
                    yield event
        # Yielded after the lock is released: a consumer that stops reading at `Done` must not
        # keep the conversation locked.
        if done is not None:
            yield done

    async def _ask_message(
        self,
        question: str,
        parent: str | None,
        plan: SearchPlan,
        persona: Persona,
        as_of: datetime | None,
    ) -> Message:
        """The user message with its fresh context: retrieval happens here (step 2)."""
        asked = Message(parent_id=parent, role="user", content=question.strip())
        return await self._with_context(asked, plan, persona, as_of)

    async def _with_context(
        self, asked: Message, plan: SearchPlan, persona: Persona, as_of: datetime | None
    ) -> Message:
        """`asked` with the posts found for `plan` and the prompt text that carries them; when
        search is unavailable, marked `feed_unavailable` with a prompt that says so."""
        sources: list[Source] = []
        fresh = ""
        unavailable = False
        if plan.needs_feed and plan.query:
            now = as_of or datetime.now(UTC)
            stamp = f"Now: {now.strftime('%Y-%m-%d %H:%M UTC')}."
            try:
                hits = await self.search.search(
                    plan.query, k=self.config.k, since=self.config.since, as_of=as_of
                )
            except SearchUnavailable as e:
                # The answer goes on without the feed and says so; the log keeps the cause.
                log.warning("search unavailable; answering without the feed: %s", e)
                unavailable = True
                fresh = f"{stamp} {FEED_UNAVAILABLE_PROMPT}"
            else:
                block = pack_context(hits, now=now, budget_tokens=self._context_budget(persona))
                sources = [Source(number=c.number, post=c.post) for c in block.citations]
                fresh = f"{stamp} Search: {plan.query}\n{block.text}"
        question = asked.content
        return asked.model_copy(
            update={
                "sent": f"{fresh}\n\n{question}" if fresh else question,
                "query": plan.query if plan.needs_feed else None,
                "context": sources,
                "feed_unavailable": unavailable,
            }
        )

    async def _answer(
        self,
        info: ConversationInfo,
        persona: Persona,
        history: Sequence[Message],
        asked: Message,
        plan: SearchPlan,
        scopes: list[str],
    ) -> AsyncIterator[TurnEvent]:
        """Steps 3–5: stream the reply, link citations, suggest follow-ups, store the turn."""
        stream, raw_parts, tokens = SafeStream(), [], 0
        suggestions: asyncio.Task[list[str]] | None = None
        notice = FEED_UNAVAILABLE if asked.feed_unavailable else None
        if notice is not None:
            yield Notice("feed_unavailable", notice)
        if plan.needs_feed and not asked.context and not asked.feed_unavailable:
            raw_parts.append(persona.empty_reply)  # nothing to ground on: say so, invent nothing
            if shown := stream.feed(persona.empty_reply):
                yield Delta(shown)
        else:
            history_msgs = [ChatMessage(role=m.role, content=m.model_text()) for m in history]
            prompt = turn_messages(persona.system_prompt(), history_msgs, asked.model_text())
            try:
                async for chunk in self.engine.stream(prompt, self._params(persona)):
                    if chunk.text:
                        raw_parts.append(chunk.text)
                        if suggestions is None and self.config.suggestions:
                            # Started after the first token so it never delays it.
                            suggestions = asyncio.create_task(
                                suggest_followups(self.engine, asked.content, asked.context)
                            )
                        if shown := stream.feed(chunk.text):
                            yield Delta(shown)
                    if chunk.usage is not None:
                        tokens = chunk.usage.total_tokens
            except BaseException:
                if suggestions is not None:
                    suggestions.cancel()
                raise
        if rest := stream.finish():
            yield Delta(rest)
        raw = "".join(raw_parts)
        text, cited = link_citations(safe_text(raw), asked.context)
        answer = Message(
            parent_id=asked.id,
            role="assistant",
            content=text,
            raw=raw,
            cited=[s.number for s in cited],
            persona=persona.name,
            model=self.engine.model_name,
            tokens=tokens,
            suggestions=await self._collect(suggestions),
            feed_unavailable=asked.feed_unavailable,
        )
        if info.title == "New conversation":
            info.title = safe_text(" ".join(asked.content.split()))[:TITLE_CHARS] or info.title
        await self.store.add(info, asked, answer)
        await self.limiter.charge(scopes, tokens)
        yield Done(
            TurnResult(
                conversation_id=info.id,
                question_id=asked.id,
                message_id=answer.id,
                text=text,
                sources=cited,
                suggestions=answer.suggestions,
                query=asked.query,
                searched=asked.query is not None and not asked.feed_unavailable,
                tokens=tokens,
                notice=notice,
            )
        )

    # ---- versions, edits, feedback ------------------------------------------------------------

    async def edit_answer(self, cid: str, user: str, message_id: str, text: str) -> Message:
        """Store `text` as a new version of answer `message_id` (the user rewrote the bot's
        reply); the conversation continues from it."""
        old = await self._message(cid, user, message_id, "assistant")
        if not text.strip():
            raise ValueError("an edited answer must not be empty")
        asked = await self.store.message(cid, old.parent_id or "")
        linked, cited = link_citations(safe_text(text), asked.context)
        new = Message(
            parent_id=old.parent_id,
            role="assistant",
            content=linked,
            raw=text,
            cited=[s.number for s in cited],
            persona=old.persona,
            edited=True,
        )
        async with self.store.lock(cid, wait=self.config.lock_wait):
            await self.store.add(await self.store.get(cid, user), new)
        return new

    async def select(self, cid: str, user: str, message_id: str) -> list[Message]:
        """Switch to version `message_id`; returns the conversation's new selected line."""
        await self.store.get(cid, user)
        await self.store.select(cid, message_id)
        return await self.store.path(cid)

    async def versions(self, cid: str, user: str, message_id: str) -> list[Message]:
        await self.store.get(cid, user)
        return await self.store.siblings(cid, message_id)

    async def feedback(
        self, cid: str, user: str, message_id: str, rating: str, note: str = ""
    ) -> Message:
        """Record thumbs up/down (and a note) on an answer, for later evaluation."""
        message = await self._message(cid, user, message_id, "assistant")
        message.feedback.append(Feedback(rating=rating, note=note, user=user))  # type: ignore[arg-type]
        await self.store.put(cid, message)
        return message

    # ---- internals ----------------------------------------------------------------------------

    async def _message(self, cid: str, user: str, mid: str, role: str) -> Message:
        await self.store.get(cid, user)
        message = await self.store.message(cid, mid)
        if message.role != role:
            raise MessageNotFound(
                f"message {mid!r} is not {'a question' if role == 'user' else 'an answer'}"
            )
        return message

    def _params(self, persona: Persona) -> SamplingParams:
        s = persona.sampling
        cap = self.config.max_reply_tokens
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=min(s.max_tokens, cap) if cap else s.max_tokens,
        )

    def _context_budget(self, persona: Persona) -> int:
        window = getattr(self.engine, "context_window", None)
        if isinstance(window, int) and window > 0:
            return max(100, min(self.config.context_tokens, window // 4))
        return self.config.context_tokens

    async def _collect(self, task: asyncio.Task[list[str]] | None) -> list[str]:
        if task is None:
            return []
        try:
            return await asyncio.wait_for(task, self.config.suggest_timeout)
        except TimeoutError:
            return []
        except Exception:  # suggestions are optional; a failure never costs the reply
            with contextlib.suppress(Exception):
                task.cancel()
            return []


def _line_to(msgs: dict[str, Message], leaf: str | None) -> list[Message]:
    """The messages from the first question down to `leaf`, inclusive."""
    line: list[Message] = []
    while leaf:
        line.append(msgs[leaf])
        leaf = msgs[leaf].parent_id
    return line[::-1]


def _open_parent(path: Sequence[Message]) -> str | None:
    """Where a new question goes: after the last answer (a question left unanswered is replaced)."""
    while path and path[-1].role != "assistant":
        path = path[:-1]
    return path[-1].id if path else None
