"""Turn events on the wire: `TurnEvent`s → named SSE events with resumable ids."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse

from bot.web.metrics import WebMetrics
from bot.web.runs import Run
from bot.web.service import (
    BadInput,
    Busy,
    Citations,
    Done,
    Limited,
    NotFound,
    Notice,
    Suggestions,
    Token,
    TurnEvent,
    Unavailable,
)

log = logging.getLogger(__name__)


async def aclose(events: AsyncIterator[TurnEvent]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


def encode(event: TurnEvent) -> tuple[str, str]:
    if isinstance(event, Notice):
        return "notice", json.dumps({"kind": event.kind, "text": event.text}, ensure_ascii=False)
    if isinstance(event, Token):
        return "token", json.dumps({"text": event.text}, ensure_ascii=False)
    if isinstance(event, Citations):
        cards = [c.model_dump(mode="json") for c in event.cards]
        return "citations", json.dumps({"citations": cards}, ensure_ascii=False)
    if isinstance(event, Suggestions):
        return "suggestions", json.dumps({"suggestions": event.items}, ensure_ascii=False)
    if isinstance(event, Done):
        return "done", json.dumps(
            {
                "question_id": event.question_id,
                "message_id": event.message_id,
                "finish_reason": event.finish_reason,
            }
        )
    raise TypeError(f"not a turn event: {event!r}")


async def produce(run: Run, events: AsyncIterator[TurnEvent]) -> AsyncIterator[tuple[str, str]]:
    yield "turn", json.dumps({"turn_id": run.id, "conversation_id": run.conversation_id})
    try:
        async for event in events:
            yield encode(event)
    except asyncio.CancelledError:
        await aclose(events)
        yield "stopped", json.dumps({"reason": "stopped"})
    except (NotFound, BadInput, Busy, Limited, Unavailable) as e:
        yield "error", json.dumps({"message": str(e)})
    except Exception:
        # The model or store failed mid-answer; the visitor sees a plain message, the log the cause.
        log.exception("turn %s failed", run.id)
        yield "error", json.dumps({"message": "the answer failed partway; try again"})


def stream(run: Run, after: int, metrics: WebMetrics | None = None) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        async for event in run.follow(after):
            if event.name == "end":
                return
            yield {"event": event.name, "id": event.id_for(run.id), "data": event.data}

    body = events() if metrics is None else metrics.stream(events())
    return EventSourceResponse(
        body, ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
