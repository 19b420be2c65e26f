"""Wiring: turns settings into the real parts (Redis, store, embedder, sources, daemon).

The only place that decides embedded versus remote: an unset `redis.url` means the
embedded redis-server under the data dir, an unset `qdrant.url` the Qdrant Edge shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import retrieval.devset
from quipfeed.embedded_redis import EmbeddedRedis

# Each part loads when a command uses it: `quipfeed --help`, `stats` or `trending` must not pay
# for the web stack, the model libraries or the daemon they do not run.
if TYPE_CHECKING:
    from ingest.bus import Bus
    from ingest.daemon import DaemonConfig, Progress
    from ingest.sources import Source
    from quipfeed.settings import Settings
    from retrieval.embedder import Embedder
    from retrieval.store import PostStore


# The attributed sample bundled with quipfeed (real MIT-licensed posts; see its README).
SAMPLE_FEED = Path(retrieval.devset.__file__).parent / "posts.jsonl"


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """The Redis to use. The embedded one is shared by the processes of one data dir; the last
    of them to finish shuts it down (saved)."""
    if settings.redis.url:
        yield settings.redis.url
        return
    embedded = EmbeddedRedis(settings.data_dir / "redis")
    url = embedded.ensure_running()
    try:
        yield url
    finally:
        embedded.release()


def open_bus(settings: Settings, url: str) -> Bus:
    import redis.asyncio as aioredis

    from ingest.bus import Bus

    return Bus(aioredis.from_url(url), settings.redis.stream, settings.redis.group)


def embedder_for(settings: Settings) -> Embedder:
    from retrieval.embedder import open_embedder

    e = settings.embedder
    return open_embedder(
        kind=e.kind,
        model=e.model,
        quantize=e.quantize,
        cache_dir=settings.data_dir / "embedders",
        batch_size=e.batch_size,
    )


def query_embedder_for(settings: Settings) -> Embedder:
    """The embedder for a query in a process that has none loaded (`quipfeed search`): the
    same vectors as `embedder_for`'s, without loading torch where that can be done."""
    from retrieval.embedder import open_query_embedder

    e = settings.embedder
    return open_query_embedder(
        kind=e.kind,
        model=e.model,
        quantize=e.quantize,
        cache_dir=settings.data_dir / "embedders",
        batch_size=e.batch_size,
    )


def open_store(settings: Settings, dim: int) -> PostStore:
    if settings.qdrant.url:
        from retrieval.server_store import ServerStore

        key = settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else None
        return ServerStore(settings.qdrant.url, key, settings.qdrant.collection, dim)
    from retrieval.edge_store import EdgeStore

    return EdgeStore(settings.data_dir / "qdrant" / settings.qdrant.collection, dim)


def stored_dim(settings: Settings) -> int | None:
    """The vector width the configured store was created with; None when it holds nothing yet
    (no shard, no collection). Commands that only read open the store with it, no model."""
    if settings.qdrant.url:
        from retrieval.server_store import stored_dim as collection_dim

        key = settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else None
        return collection_dim(settings.qdrant.url, key, settings.qdrant.collection)
    shard = settings.data_dir / "qdrant" / settings.qdrant.collection
    if not shard.is_dir():
        return None  # never created: nothing to load to learn that
    from retrieval.edge_store import stored_dim as shard_dim

    return shard_dim(shard)


NO_MODEL_CONFIGURED = (
    "no model to answer with. Set one of:\n"
    "  QUIPFEED_MODEL__URL=http://127.0.0.1:30000   an OpenAI-compatible server (SGLang; or "
    "`quipfeed serve-model --tiny` for a demo)\n"
    "  QUIPFEED_MODEL__PATH=/path/to/model-folder   a local transformers model\n"
    "(or [model] url/path in quipfeed.toml, or --model-url / --model-path)"
)


class ModelNotConfigured(ValueError):
    """Neither a model server nor a model folder is set."""


async def open_engine(
    settings: Settings, *, tiny: bool = False, url: str | None = None, path: str | None = None
) -> Any:
    """The model engine: `url` / `model.url` (SGLang or any OpenAI-compatible server, probed
    at once), `path` / `model.path` (a local folder, in process), or with `tiny` a freshly
    built tiny random model (plumbing demos: its text is gibberish).

    Raises `ModelNotConfigured` when none is set, `ValueError` for a missing folder, and
    `inference.errors.EngineUnavailable` when the server does not answer."""
    from inference.errors import EngineUnavailable

    url = url or (None if path else settings.model.url)
    local = path or (settings.model.path if not url else None)
    if tiny:
        import tempfile

        from inference.local import LocalEngine
        from inference.tiny_model import build_tiny_moe

        # Loaded into memory, the model needs its folder no more: nothing stays in the temp dir.
        with tempfile.TemporaryDirectory(prefix="quipfeed-tiny-") as tmp:
            folder = Path(tmp) / "tiny-moe"
            await asyncio.to_thread(build_tiny_moe, folder, context_window=8192)
            return await LocalEngine.aload(folder, device="cpu", prefix_cache_tokens=16_384)
    if url:
        from inference.openai_engine import OpenAIEngine

        key = settings.model.api_key.get_secret_value() if settings.model.api_key else None
        engine = OpenAIEngine(url, model=settings.model.name, api_key=key)
        try:
            await engine.start()
        except EngineUnavailable:
            # Its message already names the server and what to do, on one line.
            await engine.aclose()
            raise
        return engine
    if local:
        from inference.local import LocalEngine

        if not await asyncio.to_thread(Path(local).is_dir):
            raise ValueError(f"model folder not found: {local}")
        return await LocalEngine.aload(
            local, device="auto", name=settings.model.name, prefix_cache_tokens=16_384
        )
    raise ModelNotConfigured(NO_MODEL_CONFIGURED)


SHARED_SAMPLE = Path("../shared/data/bluesky/bluesky_posts_2024-05-01_to_05-23.jsonl")


def sample_spec() -> str:
    """The public sample beside a checkout when it is there, else the bundled one."""
    return f"jsonl:{SHARED_SAMPLE}" if SHARED_SAMPLE.is_file() else "sample"


def resolve_spec(spec: str) -> str:
    """`sample` names the bundled sample feed, so the demo works without ../shared."""
    return f"jsonl:{SAMPLE_FEED}" if spec.strip() == "sample" else spec


def open_sources(specs: list[str], speed: float) -> list[Source]:
    from ingest.sources import SourceSpecError
    from ingest.sources.spec import open_source

    sources = []
    for spec in specs:
        resolved = resolve_spec(spec)
        options: dict[str, Any] = {"speed": speed} if resolved.startswith("jsonl:") else {}
        sources.append(open_source(resolved, **options))
    if not sources:
        raise SourceSpecError(
            "no sources: pass --source (e.g. --source sample, --source jsonl:posts.jsonl, "
            "--source jetstream:wss://jetstream2.us-east.bsky.network/subscribe) "
            "or set QUIPFEED_INGEST__SOURCES"
        )
    return sources


class DaemonFile:
    """`daemon.json` in the data dir: where the process that owns the shard can be asked."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.data_dir / "daemon.json"

    def write(self, url: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"url": url, "pid": os.getpid()}))

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def live_url(self) -> str | None:
        """The running daemon's URL, or None when there is none (a stale file is ignored)."""
        try:
            info = json.loads(self.path.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        import httpx

        try:
            httpx.get(f"{info['url']}/healthz", timeout=2.0)
        except httpx.HTTPError:
            return None
        return str(info["url"])


def daemon_config(settings: Settings) -> DaemonConfig:
    from ingest.daemon import DaemonConfig

    retention = settings.ingest.retention_days
    return DaemonConfig(
        workers=settings.ingest.workers,
        batch_size=settings.ingest.batch_size,
        deadline_ms=settings.ingest.batch_deadline_ms,
        sync_interval_ms=settings.ingest.sync_interval_ms,
        retention=timedelta(days=retention) if retention else None,
        # Stable across restarts, so a restarted worker re-reads what it left pending.
        consumer_prefix=f"{socket.gethostname()}-indexer",
    )


async def run_ingest(
    settings: Settings,
    sources: list[Source],
    *,
    once: bool,
    listener: socket.socket,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Run the ingest daemon until Ctrl-C / SIGTERM (or, with `once`, until done), serving its
    HTTP side on `listener` (from `quipfeed.ports.listen`, opened before the model loads)."""
    from inference.request_id import RequestIdMiddleware
    from ingest.daemon import Daemon
    from ingest.http_api import build_app
    from retrieval.search import Searcher

    embedder = await asyncio.to_thread(embedder_for, settings)
    store = open_store(settings, embedder.dim)
    daemon_file = DaemonFile(settings)
    try:
        with redis_url(settings) as url:
            bus = open_bus(settings, url)
            daemon = Daemon(sources, bus, store, embedder, daemon_config(settings))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            app = build_app(daemon, Searcher(store, embedder))
            app.add_middleware(RequestIdMiddleware)  # a turn's id, sent by RemoteSearch
            async with serve_app(app, listener):
                daemon_file.write(url_of(listener))
                await daemon.run(stop, once=once, on_progress=on_progress, follow_feeds=not once)
            report = {"sources": {s: st.__dict__ for s, st in daemon.states.items()}}
            report["progress"] = (await daemon.progress()).__dict__
            await bus.client.aclose()
            return report
    finally:
        daemon_file.remove()
        store.close()


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serve_app(app: Any, listener: socket.socket) -> AsyncIterator[None]:
    """Serve `app` on `listener` for the duration of the block."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling: the daemon's handlers decide when to stop,
        so Ctrl-C stops the sources and drains the indexers before the HTTP side goes."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
            raise RuntimeError(f"HTTP server on {url_of(listener)} stopped at start")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task
