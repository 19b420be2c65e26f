"""A Jetstream v1 `/subscribe` websocket server replaying recorded events.

Honours `wantedCollections` (exact NSIDs and `prefix.*`), `wantedDids`, `cursor`
(inclusive replay by `time_us`, in the order given; non-integer → HTTP 400 before the
upgrade) and `compress=true` (zstd with Jetstream's dictionary, binary frames). Identity
and account events pass the collection filter, as upstream. Unlike a real server, a
connection without a cursor starts at the beginning of the backlog (as if those events
happened just after it connected), unless `replay_without_cursor=False`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from tests.fakes.loopback import bind_loopback

DICTIONARY = (
    Path(__file__).resolve().parents[2] / "ingest" / "sources" / ("jetstream_zstd_dictionary.bin")
)


class FakeJetstream:
    """`async with FakeJetstream(lines) as js:` then connect to `js.url`.

    `drop_after`: abort the next connection (TCP reset, no close frame) after it has sent
    that many messages; later connections are not dropped unless `drop_after` is set again.
    `requests` records each connection's query parameters.
    """

    def __init__(
        self,
        lines: Iterable[str],
        *,
        drop_after: int | None = None,
        port: int = 0,
        replay_without_cursor: bool = True,
    ) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        for line in lines:
            if line.strip():
                self.events.append((line.rstrip("\n"), json.loads(line)))
        self.drop_after = drop_after
        self.replay_without_cursor = replay_without_cursor
        self.requests: list[dict[str, list[str]]] = []
        self.sent = 0
        self._port = port
        self._server: Server | None = None
        self._published = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/subscribe"

    async def publish(self, line: str) -> None:
        """Append an event; live connections whose filters match receive it."""
        self.events.append((line, json.loads(line)))
        self._published.set()
        self._published = asyncio.Event()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path != "/subscribe":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        query = parse_qs(parts.query)
        cursor = query.get("cursor", [""])[-1]
        if cursor:
            try:
                int(cursor)
            except ValueError:
                return connection.respond(HTTPStatus.BAD_REQUEST, "invalid cursor\n")
        return None

    def _matches(self, event: dict[str, Any], collections: list[str], dids: set[str]) -> bool:
        if dids and event.get("did") not in dids:
            return False
        if event.get("kind") != "commit" or not collections:
            return True
        collection = str(event.get("commit", {}).get("collection", ""))
        return any(
            collection == c or (c.endswith(".*") and collection.startswith(c[:-1]))
            for c in collections
        )

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        self.requests.append(query)
        collections = query.get("wantedCollections", [])
        dids = set(query.get("wantedDids", []))
        cursor = int(query["cursor"][-1]) if query.get("cursor") else None
        compressor = None
        if query.get("compress", [""])[-1] == "true":
            data = zstandard.ZstdCompressionDict(DICTIONARY.read_bytes())
            compressor = zstandard.ZstdCompressor(dict_data=data)
        index = 0 if cursor is not None or self.replay_without_cursor else len(self.events)
        sent_here = 0
        while True:
            while index < len(self.events):
                line, event = self.events[index]
                index += 1
                if cursor is not None and int(event.get("time_us", 0)) < cursor:
                    continue
                if not self._matches(event, collections, dids):
                    continue
                if compressor is not None:
                    await ws.send(compressor.compress(line.encode()))
                else:
                    await ws.send(line)
                sent_here += 1
                self.sent += 1
                if self.drop_after is not None and sent_here >= self.drop_after:
                    self.drop_after = None
                    assert ws.transport is not None
                    ws.transport.abort()
                    return
            # Idle until something is published or the connection goes away.
            published = asyncio.ensure_future(self._published.wait())
            closed = asyncio.ensure_future(ws.wait_closed())
            await asyncio.wait({published, closed}, return_when=asyncio.FIRST_COMPLETED)
            published.cancel()
            if closed.done():
                return
            closed.cancel()

    async def __aenter__(self) -> FakeJetstream:
        sock = bind_loopback(self._port)
        self.port = int(sock.getsockname()[1])
        self._server = await serve(
            self._handle, sock=sock, process_request=self._check, compression=None
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
