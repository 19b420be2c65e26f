"""An HTTP server for one feed document, with ETag / Last-Modified and 304 answers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from types import TracebackType

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.loopback import ServedApp


class FakeFeed:
    """Serves `body` at `/feed.xml`. `set_body` publishes a new version (new ETag, later
    Last-Modified). `fail_next=N` answers the next N requests with 503. Counts what it
    answered in `full`, `not_modified` and `failed`."""

    def __init__(
        self, body: bytes, *, content_type: str = "application/rss+xml", port: int = 0
    ) -> None:
        self.content_type = content_type
        self._modified = datetime(2026, 11, 1, tzinfo=UTC)
        self.set_body(body)
        self.fail_next = 0
        self.full = self.not_modified = self.failed = 0
        self.request_headers: list[dict[str, str]] = []
        self._answered = asyncio.Event()
        self._served = ServedApp(Starlette(routes=[Route("/feed.xml", self._serve)]), port=port)

    @property
    def url(self) -> str:
        return f"{self._served.base_url}/feed.xml"

    def set_body(self, body: bytes) -> None:
        self.body = body
        self.etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        self._modified += timedelta(minutes=1)

    async def until(self, condition: Callable[[FakeFeed], bool]) -> None:
        """Return once `condition(self)` holds, checked after every answered request."""
        while not condition(self):
            await self._answered.wait()
            self._answered.clear()

    async def _serve(self, request: Request) -> Response:
        response = self._answer(request)
        self._answered.set()
        return response

    def _answer(self, request: Request) -> Response:
        self.request_headers.append(dict(request.headers))
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed += 1
            return Response("busy", status_code=503)
        headers = {"ETag": self.etag, "Last-Modified": format_datetime(self._modified, usegmt=True)}
        if_none_match = request.headers.get("if-none-match")
        if_modified_since = request.headers.get("if-modified-since")
        fresh = if_none_match == self.etag if if_none_match else False
        if not if_none_match and if_modified_since:
            try:
                fresh = parsedate_to_datetime(if_modified_since) >= self._modified
            except (TypeError, ValueError):
                fresh = False
        if fresh:
            self.not_modified += 1
            return Response(status_code=304, headers=headers)
        self.full += 1
        return Response(self.body, media_type=self.content_type, headers=headers)

    async def __aenter__(self) -> FakeFeed:
        await self._served.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._served.__aexit__(exc_type, exc, tb)
