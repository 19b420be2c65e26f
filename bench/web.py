"""Web latency and capacity, through the real composition (`quipfeed web --tiny`'s app):
embedded Redis, a Qdrant Edge shard holding the bundled sample feed, the tiny random MoE.

Prints, in one run:
- first token at the API: request sent → first `token` SSE event read (httpx), p50/p95;
- first token painted in the browser: the widget's send → the animation frame after the first
  token was drawn (Debian's Chromium via Playwright), p50/p95, and the difference;
- concurrent sessions: N anonymous sessions each streaming one answer at once; how many
  streams were open together, how many finished, first-token and finish times.

Run: `quipfeed bench web [--streams 200] [--samples 5] [--no-browser] [--json]` or
`python -m bench.web`. Figures are from the tiny model on this machine: they measure the web
layer's overhead and capacity, not a real model's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUESTIONS = [
    "What are people saying about the weather?",
    "What is the feed saying about football?",
    "Any news about elections?",
    "What are people saying about music festivals?",
    "What is happening with the markets?",
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(values, 0.5) * 1000, 1),
        "p95_ms": round(pct(values, 0.95) * 1000, 1),
        "n": len(values),
    }


class _Server:
    """The composed app under uvicorn on 127.0.0.1, in a thread with its own event loop."""

    def __init__(self, data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self._ready = threading.Event()
        self._server: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import uvicorn

        from bot.chat import ChatConfig
        from bot.limits import Limits
        from quipfeed.cli_web import web_app
        from quipfeed.settings import Settings

        async def main() -> None:
            settings = Settings(data_dir=self.data_dir)
            config = ChatConfig(
                max_reply_tokens=16,
                suggestions=False,
                limits=Limits(messages_per_minute=0, tokens_per_day=0),
            )
            async with web_app(settings, tiny=True, chat_config=config) as app:
                self._server = uvicorn.Server(
                    uvicorn.Config(
                        app,
                        host="127.0.0.1",
                        port=self.port,
                        log_level="warning",
                        backlog=4096,
                        limit_concurrency=None,
                        timeout_keep_alive=30,
                    )
                )
                task = asyncio.create_task(self._server.serve())
                while not self._server.started and not task.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                self._ready.set()
                await task

        try:
            asyncio.run(main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    def __enter__(self) -> _Server:
        self._thread.start()
        self._ready.wait(300)
        if self._error is not None:
            raise RuntimeError("web server failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)


def index_sample(data_dir: Path) -> int:
    """The bundled sample feed, embedded into the shard `quipfeed web` will open."""
    from quipfeed.runtime import SAMPLE_FEED, embedder_for, open_store
    from quipfeed.settings import Settings
    from retrieval.post import Post

    settings = Settings(data_dir=data_dir)
    embedder = embedder_for(settings)
    posts = [
        Post.model_validate_json(line)
        for line in SAMPLE_FEED.read_text().splitlines()
        if line.strip()
    ][:600]
    store = open_store(settings, embedder.dim)
    try:
        store.upsert(posts, embedder.embed([p.text for p in posts]).tolist())
    finally:
        store.close()
    return len(posts)


async def _session(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/v1/session")
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _stream_one(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    cid: str,
    text: str,
    opened: list[float] | None = None,
) -> tuple[float, float]:
    """(seconds to the first token event, seconds to done) for one streamed turn."""
    start = time.perf_counter()
    first = float("nan")
    async with client.stream(
        "POST", f"/v1/conversations/{cid}/messages", json={"text": text}, headers=auth
    ) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        if opened is not None:
            opened.append(time.perf_counter())
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                if event == "token" and first != first:
                    first = time.perf_counter() - start
                if event in ("done", "error", "stopped"):
                    break
        if event != "done":
            raise RuntimeError(f"turn ended with {event or 'nothing'}")
    return first, time.perf_counter() - start


async def api_first_token(url: str, samples: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        auth = await _session(client)
        cid = (await client.post("/v1/conversations", json={}, headers=auth)).json()["id"]
        await _stream_one(client, auth, cid, "hello")  # warm-up (not counted)
        out = []
        for i in range(samples):
            first, _ = await _stream_one(client, auth, cid, QUESTIONS[i % len(QUESTIONS)])
            out.append(first)
        return out


def browser_first_token(url: str, samples: int) -> tuple[list[float], list[float]]:
    """(send → first token painted, first token received → painted) per sample, seconds."""
    from playwright.sync_api import sync_playwright

    out: list[float] = []
    paint: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(url + "/")
        page.get_by_role("button", name="Open quipfeed chat").click()
        box = page.get_by_role("textbox", name="Message")
        box.wait_for()

        def ask(text: str, n: int) -> dict[str, float]:
            box.fill(text)
            box.press("Enter")
            page.wait_for_function(
                """n => { const r = document.querySelector('#quipfeed-widget').shadowRoot;
                  return r.querySelectorAll('.msg.assistant[data-id]').length >= n
                    && !r.querySelector('[data-streaming="true"]'); }""",
                arg=n,
                timeout=120_000,
            )
            return dict(page.evaluate("window.quipfeed.metrics()"))

        ask("hello", 1)  # warm-up: session and conversation created (not counted)
        for i in range(samples):
            m = ask(QUESTIONS[i % len(QUESTIONS)], i + 2)
            out.append((m["firstTokenPaintedAt"] - m["sendAt"]) / 1000)
            paint.append((m["firstTokenPaintedAt"] - m["firstTokenAt"]) / 1000)
        browser.close()
    return out, paint


async def concurrent_streams(url: str, n: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        auths = await asyncio.gather(*(_session(client) for _ in range(n)))
        cids = await asyncio.gather(
            *(client.post("/v1/conversations", json={}, headers=a) for a in auths)
        )
        opened: list[float] = []
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                _stream_one(client, a, c.json()["id"], QUESTIONS[i % len(QUESTIONS)], opened)
                for i, (a, c) in enumerate(zip(auths, cids, strict=True))
            ),
            return_exceptions=True,
        )
        wall = time.perf_counter() - start
        ok = [r for r in results if not isinstance(r, BaseException)]
        errors = [str(r)[:120] for r in results if isinstance(r, BaseException)]
        open_together = sum(1 for t in opened if t - start <= min(r[1] for r in ok)) if ok else 0
    return {
        "streams": n,
        "completed": len(ok),
        "failed": len(errors),
        "errors": sorted(set(errors))[:3],
        "open_before_first_finished": open_together,
        "first_token": ms([r[0] for r in ok]),
        "finished": ms([r[1] for r in ok]),
        "wall_s": round(wall, 2),
    }


@contextlib.contextmanager
def _bench_env() -> Iterator[None]:
    # Bench traffic all comes from one address: lift the per-IP and per-session limits.
    keys = {
        "QUIPFEED_WEB__SESSIONS_PER_MINUTE_IP": "1000000",
        "QUIPFEED_WEB__REQUESTS_PER_MINUTE_IP": "1000000",
        "QUIPFEED_WEB__REQUESTS_PER_MINUTE_SESSION": "1000000",
        "QUIPFEED_WEB__TURNS_PER_MINUTE_SESSION": "1000000",
        "QUIPFEED_WEB__SESSION_SECRET": "bench-secret-0123456789",
    }
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(
    *, as_json: bool = False, streams: int = 200, samples: int = 5, browser: bool = True
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report: dict[str, Any] = {"model": "tiny random MoE (CPU)", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="quipfeed-bench-web-") as tmp, _bench_env():
        data_dir = Path(tmp)
        report["posts_indexed"] = index_sample(data_dir)
        with _Server(data_dir) as server:
            api = asyncio.run(api_first_token(server.url, samples))
            report["api_first_token"] = ms(api)
            if browser and CHROMIUM.exists():
                painted, paint = browser_first_token(server.url, samples)
                report["browser_first_token_painted"] = ms(painted)
                report["browser_token_to_paint"] = ms(paint)
                report["painted_minus_api_p50_ms"] = round(
                    (statistics.median(painted) - statistics.median(api)) * 1000, 1
                )
            else:
                report["browser_first_token_painted"] = (
                    "skipped (--no-browser)" if not browser else "skipped (no /usr/bin/chromium)"
                )
            report["concurrent"] = asyncio.run(concurrent_streams(server.url, streams))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"model: {report['model']} · {report['cpus']} CPUs · {report['posts_indexed']} posts")
        a = report["api_first_token"]
        print(
            f"first token at the API:        p50 {a['p50_ms']} ms  "
            f"p95 {a['p95_ms']} ms  (n={a['n']})"
        )
        b = report["browser_first_token_painted"]
        if isinstance(b, dict):
            print(
                f"first token painted (Chromium): p50 {b['p50_ms']} ms  p95 {b['p95_ms']} ms  "
                f"(n={b['n']}); painted − API p50: {report['painted_minus_api_p50_ms']} ms"
            )
            t = report["browser_token_to_paint"]
            print(
                f"token received → painted (Chromium): p50 {t['p50_ms']} ms  p95 {t['p95_ms']} ms"
            )
        else:
            print(f"first token painted: {b}")
        c = report["concurrent"]
        print(
            f"{c['streams']} concurrent SSE sessions: {c['completed']} completed, "
            f"{c['failed']} failed, {c['open_before_first_finished']} open at once; "
            f"first token p50 {c['first_token']['p50_ms']} ms p95 {c['first_token']['p95_ms']} ms; "
            f"done p95 {c['finished']['p95_ms']} ms; wall {c['wall_s']} s"
        )
        for e in c["errors"]:
            print(f"  error: {e}")
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    a = parser.parse_args()
    main(as_json=a.json, streams=a.streams, samples=a.samples, browser=not a.no_browser)
