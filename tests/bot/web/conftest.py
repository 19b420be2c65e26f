"""Fixtures for the web API and widget: the real app served by uvicorn on 127.0.0.1, over a real
embedded Redis, a real Qdrant Edge shard holding real posts, and the tiny random MoE.

Each server runs in its own thread with its own event loop (as `quipfeed web` does in its
process); Redis clients and `Chat` are built inside that loop.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference.local import LocalEngine
from inference.tiny_model import build_tiny_moe
from retrieval.post import Post
from tests.conftest import BLUESKY_200

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "web"
SECRET = "test-secret-0123456789abcdef"

# A post whose text is hostile HTML: the widget must show it as text, never run it.
HOSTILE_POST = Post(
    id="at://did:plc:hostile/app.bsky.feed.post/xss1",
    text='Hostile post <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
    "[click](javascript:window.__pwned=3) about the rocket launch",
    created_at=datetime(2024, 5, 2, 12, 0, tzinfo=UTC),
    platform="bluesky",
    author="mallory.bsky.social",
    author_name='<b onmouseover="window.__pwned=4">Mallory</b>',
    url="javascript:window.__pwned=5",
)


@functools.cache
def _tiny_engine() -> LocalEngine:
    root = Path(tempfile.mkdtemp(prefix="quipfeed-web-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    # A persona's system prompt is longer than the default 1024-token window in this tokenizer.
    engine = LocalEngine.load(
        build_tiny_moe(root / "tiny", context_window=8192), device="cpu", max_batch_size=16
    )
    atexit.register(engine.close)
    return engine


@pytest.fixture(scope="session")
def web_posts() -> list[Post]:
    lines = BLUESKY_200.read_text().splitlines()[:60]
    return [Post.model_validate_json(line) for line in lines] + [HOSTILE_POST]


@pytest.fixture(scope="session")
def web_store(tmp_path_factory: pytest.TempPathFactory, minilm, web_posts):  # type: ignore[no-untyped-def]
    from retrieval.edge_store import EdgeStore

    store = EdgeStore(tmp_path_factory.mktemp("web-shard") / "shard", minilm.dim)
    store.upsert(web_posts, minilm.embed([p.text for p in web_posts]).tolist())
    yield store
    store.close()


@pytest.fixture(scope="session")
def web_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from quipfeed.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("web-redis"))
    yield server.ensure_running()
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving `await make_app()` on 127.0.0.1 in a thread of its own."""

    def __init__(self, make_app: Callable[[], Awaitable[Any]]) -> None:
        self.make_app = make_app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: Any = None
        self.engine: Any = None  # the engine behind the app, when a test needs to steer it
        self._server: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import uvicorn

        async def main() -> None:
            self.app = await self.make_app()
            self._server = uvicorn.Server(
                uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
            )
            self._server.config.setup_event_loop = lambda: None
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # uvicorn offers no "started" event to wait on
            self._ready.set()
            await serving

        try:
            asyncio.run(main())
        except BaseException as e:  # surfaced to the test that started it
            self._error = e
            self._ready.set()

    def start(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise RuntimeError("web server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)


TREND_PREFIX = "quipfeed:test-trend"


def record_trending(redis_url: str, posts: list[Post], tag: str) -> None:
    """Count copies of real `posts`, tagged `tag` and dated now, as the indexer would."""
    import redis.asyncio as aioredis

    from retrieval.trending import TrendCounter

    now = datetime.now(UTC)
    copies = [
        p.model_copy(update={"id": f"{p.id}#{tag}", "created_at": now, "hashtags": [tag]})
        for p in posts
    ]

    async def go() -> None:
        client = aioredis.from_url(redis_url)
        try:
            await TrendCounter(client, TREND_PREFIX).record(copies)
        finally:
            await client.aclose()

    # A thread of its own: Playwright's sync API keeps an event loop running in this one.
    worker = threading.Thread(target=asyncio.run, args=(go(),))
    worker.start()
    worker.join(30)


def make_app_factory(
    redis_url: str,
    store: Any,
    embedder: Any,
    engine: Any,
    *,
    trending: bool = True,
    metrics: Any = None,
    **options: Any,
) -> Callable[[], Awaitable[Any]]:
    """`metrics`: a `bot.web.metrics.WebMetrics` the app serves and times its searches into."""

    async def make() -> Any:
        import redis.asyncio as aioredis

        from bot.chat import Chat, ChatConfig
        from bot.limits import Limits
        from bot.persona import load_personas
        from bot.search import LocalSearch
        from bot.web.app import create_app
        from bot.web.chat_adapter import BotChatService, counter_trending
        from bot.web.options import WebOptions
        from retrieval.search import Searcher
        from retrieval.trending import TrendCounter

        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=32, timeout=30)
        search: Any = LocalSearch(Searcher(store, embedder))
        if metrics is not None:
            from bot.web.metrics import TimedSearch

            search = TimedSearch(search, metrics.retrieval.observe)
        chat = Chat(
            aioredis.Redis(connection_pool=pool),
            engine,
            search,
            load_personas(),
            ChatConfig(max_reply_tokens=24, limits=Limits(messages_per_minute=0, tokens_per_day=0)),
        )
        opts: dict[str, Any] = {
            "session_secret": SECRET,
            "turns_per_minute_session": 600,
            "requests_per_minute_session": 6000,
            "requests_per_minute_ip": 60000,
            "concurrent_turns_per_owner": 4,
        }
        opts.update(options)
        source = counter_trending(TrendCounter(chat.store.r, TREND_PREFIX)) if trending else None
        return create_app(BotChatService(chat, trending=source), WebOptions(**opts), metrics)

    return make


@pytest.fixture(scope="session")
def live(web_redis_url: str, web_store, minilm) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """The app with the tiny model, served for the whole session."""
    server = LiveServer(make_app_factory(web_redis_url, web_store, minilm, _tiny_engine())).start()
    yield server
    server.stop()


@pytest.fixture
def session_token(live: LiveServer) -> str:
    r = httpx.post(f"{live.url}/v1/session")
    r.raise_for_status()
    return str(r.json()["token"])


@pytest.fixture
def client(live: LiveServer, session_token: str) -> Iterator[httpx.Client]:
    """An HTTP client holding a fresh anonymous session."""
    with httpx.Client(
        base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {session_token}"}
    ) as c:
        yield c


# The scripted reply: hostile HTML and a javascript: link from "the model", citing two posts.
HOSTILE_REPLY = (
    'Launch news <img src=x onerror="window.__pwned=6"> is in [1] and [2]. '
    "<script>window.__pwned=7</script> See [this](javascript:window.__pwned=8) **bold** "
    '<a href="javascript:window.__pwned=9" onclick="window.__pwned=10">x</a> end.'
)


@pytest.fixture(scope="session")
def scripted_live(web_redis_url: str, web_store, minilm) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """The app answering with `ScriptedEngine` (a known, hostile reply, a word every 30 ms):
    for the XSS test and for stopping and resuming a turn mid-stream. Everything else is real."""
    from tests.bot.scripted_engine import ScriptedEngine

    engine = ScriptedEngine([HOSTILE_REPLY], delay=0.03)
    server = LiveServer(make_app_factory(web_redis_url, web_store, minilm, engine)).start()
    server.engine = engine
    yield server
    server.stop()


@pytest.fixture
def slow_stream(scripted_live: LiveServer) -> Iterator[LiveServer]:
    """`scripted_live` streaming a word every 200 ms (~6 s a reply) for this test only: a test
    that must act while a reply is still streaming cannot race a 1 s reply on a loaded box."""
    engine = scripted_live.engine
    engine.delay, normal = 0.2, engine.delay
    try:
        yield scripted_live
    finally:
        engine.delay = normal


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Parse an SSE line stream into {id, event, data} dicts (comments and pings skipped)."""
    event: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if "event" in event or "data" in event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data" and "data" in event:
            event["data"] += "\n" + value
        else:
            event[field] = value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's Chromium through Playwright")


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server; `drop(pause)` cuts every open connection
    (as a network drop would, mid-stream) and refuses new ones for `pause` seconds."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._refuse_until = 0.0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import time

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self, pause: float = 0.0) -> None:
        import time

        self._refuse_until = time.monotonic() + pause
        with self._lock:
            conns, self._open = self._open, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self.drop()
        self.listener.close()
