"""The Discord bot's Prometheus metrics and per-turn log line, on a registry of its own.

What a dashboard may rely on (names prefixed `quipfeed_discord_`):
`interactions_total{command,outcome}` — command: a slash command's name (`ask`, `feed add`),
`mention` (a mention, reply or DM), `button:<action>`; outcome: `ok`, `error`, `refused`
(a check said no: permissions, DMs, cooldown, bad input);
`turns_total{outcome}` (`answered`, or why not, as in `errors_total`);
`errors_total{kind}` — why a turn failed: `model_busy`, `model_down`, `model_stopped`,
`model_rejected`, `model_failed`, `search_unavailable`, `busy`, `forgotten`, `limited`,
`unknown_persona`, `incomplete`, `internal`, or `command` (a slash command raised);
`time_to_first_token_seconds` (histogram: from a turn starting to its first text);
`turns_active` (turns streaming now).

Each interaction gets its own request id (`inference.request_id`), current while it is handled,
so its retrieval and model log lines (and the model server's, over `X-Request-ID`) share it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.chat import Delta, Done, TurnEvent
from bot.limits import LimitExceeded
from bot.search import SearchUnavailable
from bot.store import ConversationBusy, ConversationNotFound, MessageNotFound
from inference.errors import (
    EngineOverloaded,
    EngineUnavailable,
    InferenceError,
    InvalidRequest,
    StreamInterrupted,
)
from inference.request_id import new_request_id, set_current

log = logging.getLogger("bot.discord.turns")

_TTFT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# Most specific first: EngineOverloaded is an EngineUnavailable.
_KINDS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (LimitExceeded, "limited"),
    (EngineOverloaded, "model_busy"),
    (EngineUnavailable, "model_down"),
    (StreamInterrupted, "model_stopped"),
    (InvalidRequest, "model_rejected"),
    (InferenceError, "model_failed"),
    (SearchUnavailable, "search_unavailable"),
    (ConversationBusy, "busy"),
    ((ConversationNotFound, MessageNotFound), "forgotten"),
    (KeyError, "unknown_persona"),
)


def error_kind(error: BaseException) -> str:
    """The `kind` label for a turn that failed with `error`."""
    for kinds, label in _KINDS:
        if isinstance(error, kinds):
            return label
    return "internal"


class DiscordMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.interactions = Counter(
            "quipfeed_discord_interactions",
            "Interactions (slash commands, mentions, buttons) by outcome",
            ["command", "outcome"],
            registry=r,
        )
        self.turns = Counter(
            "quipfeed_discord_turns", "Answers streamed, by outcome", ["outcome"], registry=r
        )
        self.errors = Counter(
            "quipfeed_discord_errors", "Failed turns and commands, by kind", ["kind"], registry=r
        )
        self.ttft = Histogram(
            "quipfeed_discord_time_to_first_token_seconds",
            "From a turn starting to its first text (retrieval and prefill included)",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.turns_active = Gauge(
            "quipfeed_discord_turns_active", "Turns streaming now", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def begin(self, command: str) -> str:
        """A new request id, current for the rest of this task (discord.py runs each event and
        each interaction in a task of its own); logs that `command` arrived."""
        request_id = new_request_id()
        set_current(request_id)
        log.info("interaction", extra={"command": command})
        return request_id

    def count(self, command: str, outcome: str) -> None:
        self.interactions.labels(command, outcome).inc()

    @contextlib.contextmanager
    def interaction(self, command: str) -> Iterator[None]:
        """`begin(command)`, then count the block's outcome: `ok`, or `error` if it raised."""
        self.begin(command)
        try:
            yield
        except BaseException:
            self.count(command, "error")
            raise
        self.count(command, "ok")

    async def watch(
        self, events: AsyncGenerator[TurnEvent, None]
    ) -> AsyncGenerator[TurnEvent, None]:
        """`events` passed through, timed and counted; one `turn` log line when it ends.
        Errors are re-raised (the caller turns them into a message). Closing this closes
        `events`."""
        started = time.perf_counter()
        first: float | None = None
        outcome = "incomplete"
        self.turns_active.inc()
        try:
            async for event in events:
                if first is None and isinstance(event, Delta) and event.text:
                    first = time.perf_counter() - started
                    self.ttft.observe(first)
                elif isinstance(event, Done):
                    outcome = "answered"
                yield event
        except GeneratorExit:
            outcome = "stopped"
            raise
        except Exception as e:
            outcome = error_kind(e)
            raise
        finally:
            self.turns_active.dec()
            self.turns.labels(outcome).inc()
            if outcome not in ("answered", "stopped"):
                self.errors.labels(outcome).inc()
            log.info(
                "turn",
                extra={
                    "outcome": outcome,
                    "ttft_ms": None if first is None else round(first * 1000, 1),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            await events.aclose()
