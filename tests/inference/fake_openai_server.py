"""A scriptable OpenAI-compatible server on 127.0.0.1 for faults the real one will not make on
demand: error statuses, stalls, a stream cut halfway. Speaks real HTTP/1.1 (chunked SSE), so the
client under test runs its real transport code."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Action = Callable[[asyncio.StreamWriter], Awaitable[None]]


def chunk_event(
    text: str | None = None,
    finish: str | None = None,
    index: int = 0,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices = (
        []
        if usage is not None
        else [
            {
                "index": index,
                "delta": {"content": text} if text is not None else {},
                "finish_reason": finish,
            }
        ]
    )
    event: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": choices,
    }
    if usage is not None:
        event["usage"] = usage
    return event


def reply_events(text: str) -> list[dict[str, Any]]:
    """A whole, well-formed reply: one chunk per word, a finish chunk, a usage chunk."""
    words = text.split(" ")
    pieces = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
    return [
        *(chunk_event(p) for p in pieces),
        chunk_event(finish="stop"),
        chunk_event(
            usage={
                "prompt_tokens": 5,
                "completion_tokens": len(pieces),
                "total_tokens": 5 + len(pieces),
            }
        ),
    ]


def status(code: int, message: str = "nope", headers: dict[str, str] | None = None) -> Action:
    async def act(writer: asyncio.StreamWriter) -> None:
        body = json.dumps({"error": {"message": message, "code": code}}).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            f"\r\nConnection: close\r\n{extra}\r\n".encode()
            + body
        )
        await writer.drain()

    return act


def json_reply(body: Any) -> Action:
    async def act(writer: asyncio.StreamWriter) -> None:
        data = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    return act


def stream(
    events: list[dict[str, Any]],
    *,
    done: bool = True,
    cut_after: int | None = None,
    delay: float = 0.0,
    stall_after: int | None = None,
) -> Action:
    """An SSE reply. `cut_after`: drop the connection after that many events (no terminator).
    `stall_after`: go silent after that many events. `delay`: seconds between events."""

    async def act(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        payloads = [f"data: {json.dumps(e)}\n\n" for e in events]
        if done:
            payloads.append("data: [DONE]\n\n")
        for i, payload in enumerate(payloads):
            if cut_after is not None and i == cut_after:
                return
            if stall_after is not None and i == stall_after:
                await asyncio.sleep(3600)
            data = payload.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return act


def stall() -> Action:
    async def act(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    return act


@dataclass
class FakeServer:
    """Answers each POST with the next scripted action (the last one repeats). GETs: `/health`
    200; with `model` set, also the probes a gateway (smg) makes before it registers a worker,
    answered as SGLang does (`/v1/models`, `/server_info`, `/model_info` and their `get_`
    aliases); anything else 404."""

    actions: list[Action] = field(default_factory=list)
    model: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method not in ("GET", "POST"):
                # e.g. sglang-router's HTTP/2 preface ("PRI *") while it detects the protocol.
                return
            if method == "GET":
                await self._probe(path.partition("?")[0])(writer)
                return
            self.requests.append(json.loads(body or b"{}"))
            action = self.actions[min(len(self.requests) - 1, len(self.actions) - 1)]
            watcher = asyncio.create_task(self._watch(reader))
            try:
                await action(writer)
            finally:
                watcher.cancel()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _probe(self, path: str) -> Action:
        if path == "/health":
            return status(200)
        if self.model is None:
            return status(404)
        if path == "/v1/models":
            card = {"id": self.model, "object": "model", "created": 0, "owned_by": "sglang"}
            return json_reply({"object": "list", "data": [card]})
        if path in ("/server_info", "/get_server_info"):
            return json_reply({"model_path": self.model, "context_length": 1024, "version": "0"})
        if path in ("/model_info", "/get_model_info"):
            return json_reply({"model_path": self.model, "is_generation": True})
        return status(404)

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        # The client sends nothing more; EOF means it closed the connection.
        if await reader.read() == b"":
            self.disconnected.set()
