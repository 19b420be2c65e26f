"""The web app's Prometheus metrics and per-turn log line, on a registry of its own (tests run
several apps in one process; the global registry would collide).

`/metrics` serves them. What a dashboard may rely on (all names prefixed `quipfeed_web_`):
`turns_started_total{kind}`, `turns_completed_total{kind}`, `turns_failed_total{kind,reason}`
(reason: `stopped`, `unavailable`, `limited`, `busy`, `not_found`, `bad_input`, `incomplete`,
`internal`), `time_to_first_token_seconds` (histogram, from the turn starting to its first
token), `tokens_streamed_total` (token events sent), `retrieval_seconds` (histogram, one search),
`active_streams` (SSE and OpenAI-style streams open now), `turns_active` (turns generating),
`http_requests_total{method,route,status}` (route is the path template, `other` if none matched).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.search import PostSearch
from bot.web.service import (
    BadInput,
    Busy,
    Done,
    Limited,
    NotFound,
    Token,
    TurnEvent,
    Unavailable,
)
from retrieval.store import Hit

log = logging.getLogger("bot.web.turns")

_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_SEARCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (Unavailable, "unavailable"),
    (Limited, "limited"),
    (Busy, "busy"),
    (NotFound, "not_found"),
    (BadInput, "bad_input"),
)


def failure_reason(error: BaseException) -> str:
    """The `reason` label for a turn that ended with `error`."""
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "internal"


class WebMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns_started = Counter(
            "quipfeed_web_turns_started", "Turns that began answering", ["kind"], registry=r
        )
        self.turns_completed = Counter(
            "quipfeed_web_turns_completed", "Turns answered to the end", ["kind"], registry=r
        )
        self.turns_failed = Counter(
            "quipfeed_web_turns_failed",
            "Turns that ended without an answer, by reason",
            ["kind", "reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "quipfeed_web_time_to_first_token_seconds",
            "From a turn starting to its first token (retrieval and prefill included)",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "quipfeed_web_tokens_streamed", "Token events streamed to clients", registry=r
        )
        self.retrieval = Histogram(
            "quipfeed_web_retrieval_seconds",
            "One feed search, as the web process waited for it",
            buckets=_SEARCH_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "quipfeed_web_active_streams", "Streaming responses open now", registry=r
        )
        self.turns_active = Gauge(
            "quipfeed_web_turns_active", "Turns generating now (streamed or not)", registry=r
        )
        self.http_requests = Counter(
            "quipfeed_web_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def watch(self, events: AsyncIterator[TurnEvent], kind: str) -> AsyncIterator[TurnEvent]:
        """`events` passed through, counted and timed; one `turn` log line when it ends.
        Closing this closes `events`."""
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        outcome = "incomplete"
        self.turns_started.labels(kind).inc()
        self.turns_active.inc()
        try:
            async for event in events:
                if isinstance(event, Token):
                    if first is None:
                        first = time.perf_counter() - started
                        self.ttft.observe(first)
                    tokens += 1
                    self.tokens.inc()
                elif isinstance(event, Done):
                    outcome = "completed"
                yield event
        except GeneratorExit:
            outcome = "stopped"  # the consumer closed the turn (stop, or the client went away)
            raise
        except BaseException as e:
            outcome = "stopped" if isinstance(e, asyncio.CancelledError) else failure_reason(e)
            raise
        finally:
            self.turns_active.dec()
            if outcome == "completed":
                self.turns_completed.labels(kind).inc()
            else:
                self.turns_failed.labels(kind, outcome).inc()
            log.info(
                "turn",
                extra={
                    "kind": kind,
                    "outcome": outcome,
                    "tokens": tokens,
                    "ttft_ms": None if first is None else round(first * 1000, 1),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def stream(self, body: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A streaming response body, counted in `active_streams` while open."""
        self.active_streams.inc()
        try:
            async for item in body:
                yield item
        finally:
            self.active_streams.dec()
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()


class TimedSearch:
    """A `PostSearch` that reports each search's duration to `observe` (seconds)."""

    def __init__(self, inner: PostSearch, observe: Callable[[float], None]) -> None:
        self.inner, self.observe = inner, observe

    async def search(
        self, text: str, *, k: int, since: timedelta | None, as_of: datetime | None
    ) -> list[Hit]:
        started = time.perf_counter()
        try:
            return await self.inner.search(text, k=k, since=since, as_of=as_of)
        finally:
            self.observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        # The wrapped search's other methods (`aclose`, …) stay reachable.
        return getattr(self.inner, name)


Scope = MutableMapping[str, Any]


class HttpMetricsMiddleware:
    """ASGI middleware counting each HTTP request by method, route template and status."""

    def __init__(self, app: Any, metrics: WebMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            route = scope.get("route")
            # The template, never the raw path: ids in paths would explode the label set.
            template = getattr(route, "path", None) or "other"
            self.metrics.http_requests.labels(scope.get("method", ""), template, str(status)).inc()

        async def send_status(message: MutableMapping[str, Any]) -> None:
            # Counted when the status goes out: a stream is counted as it starts, not when it ends.
            if message["type"] == "http.response.start":
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if not counted:  # failed before any response
                count(500)
