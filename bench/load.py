"""Sustained load (and soak) against `quipfeed web --tiny` run as a subprocess: many concurrent
sessions, each streaming turn after turn for `--duration` seconds.

Prints: turns completed and sustained turns/s, time to first token p50/p99 (request sent → first
`token` SSE event), turn time p50/p99, errors by kind, and the server's RSS over time (sampled
each second from /proc, the server and its children), with its growth from the first sample.

Run: `python -m bench.load [--sessions 32] [--duration 60] [--turns-per-conversation 4] [--json]`
(a 10-minute soak is `--duration 600`). The tiny random model answers: figures measure the web
layer, the conversation store and the retrieval path under load, not a real model's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.web import QUESTIONS, _session, _stream_one, index_sample, pct


@dataclass
class Tally:
    ttft: list[float] = field(default_factory=list)
    turn: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    wall: float = 0.0  # seconds from the first turn started to the last one finished


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children, in MiB (0 once it has gone)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


async def _sessions_loop(
    url: str, index: int, until: float, per_conversation: int, tally: Tally
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        try:
            auth = await _session(client)
        except (httpx.HTTPError, RuntimeError) as exc:
            tally.errors[f"session: {type(exc).__name__}"] += 1
            return
        cid, turns = "", 0
        while time.monotonic() < until:
            try:
                if turns % per_conversation == 0:
                    r = await client.post("/v1/conversations", json={}, headers=auth)
                    r.raise_for_status()
                    cid = r.json()["id"]
                question = QUESTIONS[(index + turns) % len(QUESTIONS)]
                first, total = await _stream_one(client, auth, cid, question)
                tally.ttft.append(first)
                tally.turn.append(total)
            except (httpx.HTTPError, RuntimeError) as exc:
                tally.errors[str(exc)[:80] or type(exc).__name__] += 1
                await asyncio.sleep(0.5)  # do not spin on a failing server
            turns += 1


async def _watch_memory(pid: int, start: float, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        tally.rss_mb.append((round(time.monotonic() - start, 1), round(rss_mib(pid), 1)))
        await asyncio.sleep(1.0)


async def drive(url: str, pid: int, sessions: int, duration: float, per_conv: int) -> Tally:
    """Sessions start turns until `duration` is up, then finish the turn they are in."""
    tally = Tally()
    start = time.monotonic()
    until = start + duration
    await asyncio.gather(
        _watch_memory(pid, start, until, tally),
        *(_sessions_loop(url, i, until, per_conv, tally) for i in range(sessions)),
    )
    tally.wall = time.monotonic() - start
    return tally


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"quipfeed web exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/v1/personas", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("quipfeed web did not start in time")


def run(sessions: int, duration: float, per_conversation: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="quipfeed-load-") as work:
        data_dir = Path(work) / "data"
        posts = index_sample(data_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "QUIPFEED_DATA_DIR": str(data_dir),
            # All load comes from one address: lift the per-IP and per-session limits.
            "QUIPFEED_WEB__SESSIONS_PER_MINUTE_IP": "1000000",
            "QUIPFEED_WEB__REQUESTS_PER_MINUTE_IP": "1000000",
            "QUIPFEED_WEB__REQUESTS_PER_MINUTE_SESSION": "1000000",
            "QUIPFEED_WEB__TURNS_PER_MINUTE_SESSION": "1000000",
            "QUIPFEED_WEB__SESSION_SECRET": "load-bench-secret-0123456789",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "quipfeed.cli", "web", "--tiny", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(url, server)
            tally = asyncio.run(drive(url, server.pid, sessions, duration, per_conversation))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            # The embedded redis-server is daemonised: it outlives its parent unless stopped.
            from quipfeed.embedded_redis import EmbeddedRedis

            EmbeddedRedis(data_dir / "redis").stop()
    ttft = [t for t in tally.ttft if t == t]  # a turn answered without tokens has no TTFT
    rss = [mb for _, mb in tally.rss_mb]
    return {
        "sessions": sessions,
        "duration_s": duration,
        "posts_indexed": posts,
        "turns": len(tally.turn),
        "wall_s": round(tally.wall, 1),
        "turns_per_s": round(len(tally.turn) / tally.wall, 3) if tally.wall else None,
        "ttft_ms_p50": round(pct(ttft, 0.5) * 1000, 1) if ttft else None,
        "ttft_ms_p99": round(pct(ttft, 0.99) * 1000, 1) if ttft else None,
        "turn_ms_p50": round(pct(tally.turn, 0.5) * 1000, 1) if tally.turn else None,
        "turn_ms_p99": round(pct(tally.turn, 0.99) * 1000, 1) if tally.turn else None,
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(tally.errors),
        "rss_mib_first": rss[0] if rss else None,
        "rss_mib_max": max(rss) if rss else None,
        "rss_mib_last": rss[-1] if rss else None,
        "rss_mib_growth": round(rss[-1] - rss[0], 1) if rss else None,
        "rss_mib_over_time": tally.rss_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds (600: a soak).")
    parser.add_argument("--turns-per-conversation", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = parser.parse_args()
    result = run(args.sessions, args.duration, args.turns_per_conversation)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key != "rss_mib_over_time":
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
