"""The request id that follows one turn through every layer and over every HTTP hop.

One `ContextVar` holds the id of the turn the current task works for. An entry point sets it
(`bind`, or `RequestIdMiddleware` for an ASGI app); asyncio copies it into every task and
`asyncio.to_thread` call started afterwards, so retrieval running in a worker thread and a
turn's own streaming task see it too. `OpenAIEngine` sends it on as `X-Request-ID`, and the
model server's middleware takes it from there. Log records carry it as `request_id` once
`install_log_records()` has run (the composition root's `quipfeed.logs.configure` does).

It lives in `inference` because that package imports nothing else of quipfeed's, so every layer
allowed to use it may import it (`bot` and the composition root do; `inference` needs it itself
for the outgoing header and the server). `retrieval` never imports it: its log lines get the id
through the log record factory. Never pass `request_id` in a log call's `extra=` (the factory
sets that attribute; `logging` refuses to overwrite it).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-ID"
# What a caller may send: short, and only characters safe in a log line, a header and a URL.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_current: ContextVar[str | None] = ContextVar("quipfeed_request_id", default=None)


def new_request_id() -> str:
    """A fresh id: 16 hex characters (64 random bits)."""
    return secrets.token_hex(8)


def valid(value: str | None) -> bool:
    """True if `value` may be used as a request id as given (1–64 of `A-Za-z0-9._:-`)."""
    return value is not None and _VALID.fullmatch(value) is not None


def accept(value: str | None) -> str:
    """A caller's id if it is `valid`, else a fresh one (never an error: the id is advisory)."""
    return value if value is not None and valid(value) else new_request_id()


def current() -> str | None:
    """The id of the turn this task works for, if any."""
    return _current.get()


@contextlib.contextmanager
def bind(request_id: str) -> Iterator[str]:
    """Make `request_id` current for the block (and for tasks started inside it)."""
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)


def set_current(request_id: str | None) -> None:
    """Make `request_id` current for the rest of this task (an event handler's own task, where
    there is no block to scope it to)."""
    _current.set(request_id)


_installed = False


def install_log_records() -> None:
    """Give every log record made from now on a `request_id` attribute while one is current.
    Idempotent; wraps whatever record factory was installed before."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request_id = _current.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


Scope = MutableMapping[str, Any]


class RequestIdMiddleware:
    """ASGI middleware: each HTTP request runs with the caller's `X-Request-ID` (if valid) or a
    fresh id current, and the response carries it back in the same header.

    A pure ASGI middleware, not Starlette's `BaseHTTPMiddleware`: the id is set in the task
    that runs the whole app, so streaming responses and tasks the endpoint starts inherit it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given: str | None = None
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = accept(given)
        raw = request_id.encode()

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers") or () if h[0] != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", raw)]
            await send(message)

        with bind(request_id):
            await self.app(scope, receive, send_with_id)
