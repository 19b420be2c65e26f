"""A slowloris-style client against the live web app (uvicorn configured as `quipfeed web`
configures it, on 127.0.0.1): many connections that send headers and part of a body, then stall.
Other people are still served promptly, and the stalled connections do not stay open forever.

What tests/web already covers is not repeated here: forged, tampered and expired session tokens,
another session's conversation ids, CORS from a disallowed origin, oversized bodies (413)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.bot.web.conftest import LiveServer

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 50
BOUND_S = 20.0  # how long a stalled request may hold a connection


def stalled_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 4096\r\n\r\n{"a": '
    )
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return False
    except OSError:
        return True
    # Closed (b"") or answered with an error status: either way the server let go.
    return data == b"" or data.startswith(b"HTTP/1.1 4")


def test_stalled_partial_bodies_neither_starve_others_nor_hold_on_forever(
    live: LiveServer,
) -> None:
    socks = [stalled_connection(live.port) for _ in range(SLOW_CLIENTS)]
    try:
        started = time.monotonic()
        answer = httpx.get(f"{live.url}/v1/personas", timeout=5)
        assert answer.status_code == 200
        assert time.monotonic() - started < 2.0, "a stalled crowd starved a normal request"

        open_socks = list(socks)
        deadline = time.monotonic() + BOUND_S
        while open_socks and time.monotonic() < deadline:
            open_socks = [s for s in open_socks if not closed_by_server(s)]
            time.sleep(0.2)
        assert not open_socks, f"{len(open_socks)}/{SLOW_CLIENTS} stalled requests still held"
    finally:
        for sock in socks:
            sock.close()
