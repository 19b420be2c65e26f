"""A Mastodon server's streaming (SSE) and timeline API, fed with recorded statuses.

The fake plays a `script` of events — `("update", status JSON)`, `("delete", local id)`,
`("status.update", status JSON)` — as things that *happen*: each is sent to the stream
connected at the time and then it is past. An `update` also adds its status to the
public timeline, which `GET /api/v1/timelines/public?min_id=` (and `/timelines/tag/…`)
serves newest first, as Mastodon does. `drop_after=N` aborts the next stream after N
events, and `missed_on_drop=K` lets K more events happen while no client is connected
(only backfill can bring those updates back). Streams open with `:)` and send `:thump`
heartbeats once the script is played out. One streaming client at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import ServedApp


class StreamDropped(Exception):
    """Raised inside the response body so the server cuts the connection mid-stream."""


def _order(status: dict[str, Any]) -> tuple[int, str]:
    return (len(status["id"]), status["id"])


def updates(statuses: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """A script posting each status in turn."""
    return [("update", json.dumps(s, ensure_ascii=False)) for s in statuses]


class FakeMastodon:
    def __init__(
        self,
        script: Sequence[tuple[str, str]],
        *,
        timeline: Iterable[dict[str, Any]] = (),
        token: str | None = None,
        drop_after: int | None = None,
        missed_on_drop: int = 0,
        heartbeat_s: float = 0.05,
        port: int = 0,
    ) -> None:
        self.script = list(script)
        self.position = 0
        self.timeline: list[dict[str, Any]] = sorted(timeline, key=_order)
        self.token = token
        self.drop_after = drop_after
        self.missed_on_drop = missed_on_drop
        self.heartbeat_s = heartbeat_s
        self.stream_requests: list[dict[str, str]] = []
        self.timeline_requests: list[dict[str, str]] = []
        self._served = ServedApp(self._app(), port=port)

    @property
    def base_url(self) -> str:
        return self._served.base_url

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def _happen(self, event: str, data: str) -> None:
        if event == "update":
            status = json.loads(data)
            if not any(s["id"] == status["id"] for s in self.timeline):
                self.timeline.append(status)
                self.timeline.sort(key=_order)

    def _authorised(self, request: Request) -> bool:
        return self.token is None or request.headers.get("authorization") == (
            f"Bearer {self.token}"
        )

    def _app(self) -> Starlette:
        async def stream(request: Request) -> Response:
            channel = request.path_params["channel"]
            if channel not in ("public", "hashtag"):
                return JSONResponse({"error": "Unknown channel requested"}, status_code=400)
            if not self._authorised(request):
                return JSONResponse({"error": "The access token is invalid"}, status_code=401)
            tag = request.query_params.get("tag", "").lower() if channel == "hashtag" else None
            if channel == "hashtag" and not tag:
                return JSONResponse({"error": "No tag for stream provided"}, status_code=400)
            self.stream_requests.append({"channel": channel, **dict(request.query_params)})
            return StreamingResponse(self._body(tag), media_type="text/event-stream")

        async def timeline(request: Request) -> Response:
            if not self._authorised(request):
                return JSONResponse({"error": "The access token is invalid"}, status_code=401)
            params = dict(request.query_params)
            self.timeline_requests.append(params)
            tag = request.path_params.get("tag")
            return JSONResponse(self._page(params, tag.lower() if tag else None))

        async def health(request: Request) -> Response:
            return PlainTextResponse("OK")

        return Starlette(
            routes=[
                Route("/api/v1/streaming/health", health),
                Route("/api/v1/streaming/{channel}", stream),
                Route("/api/v1/timelines/public", timeline),
                Route("/api/v1/timelines/tag/{tag}", timeline),
            ]
        )

    def _page(self, params: dict[str, str], tag: str | None) -> list[dict[str, Any]]:
        try:
            limit = min(40, max(1, int(params.get("limit", "20"))))
        except ValueError:
            limit = 20
        items = [s for s in self.timeline if tag is None or _has_tag(s, tag)]
        if "max_id" in params:
            items = [s for s in items if _order(s) < _order({"id": params["max_id"]})]
        if "min_id" in params:
            # min_id: the page right after min_id (oldest first), returned newest first.
            items = [s for s in items if _order(s) > _order({"id": params["min_id"]})][:limit]
        else:
            if "since_id" in params:
                items = [s for s in items if _order(s) > _order({"id": params["since_id"]})]
            items = items[-limit:]
        return list(reversed(items))

    async def _body(self, tag: str | None) -> AsyncIterator[str]:
        yield ":)\n\n"
        sent = 0
        while self.position < len(self.script):
            event, data = self.script[self.position]
            self.position += 1
            self._happen(event, data)
            if tag is not None and event != "delete" and not _has_tag(json.loads(data), tag):
                continue
            yield f"event: {event}\ndata: {data}\n\n"
            sent += 1
            if self.drop_after is not None and sent >= self.drop_after:
                self.drop_after = None
                for event, data in self.script[self.position : self.position + self.missed_on_drop]:
                    self._happen(event, data)
                self.position += self.missed_on_drop
                await asyncio.sleep(0.01)  # let the last event leave before the cut
                raise StreamDropped("fake mastodon drops the stream")
        while True:
            await asyncio.sleep(self.heartbeat_s)
            yield ":thump\n\n"

    async def __aenter__(self) -> FakeMastodon:
        await self._served.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._served.__aexit__(exc_type, exc, tb)


def _has_tag(status: dict[str, Any], tag: str) -> bool:
    target = status.get("reblog") or status
    return any(str(t.get("name", "")).lower() == tag for t in target.get("tags", []))
