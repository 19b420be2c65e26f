"""The daemon's HTTP face: health, Prometheus metrics, stats, dead letters and search.

While a daemon owns the embedded shard, `quipfeed stats` and `quipfeed search` ask it
here instead of opening the shard themselves.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from ingest.daemon import Daemon
from ingest.stats import collect_stats
from retrieval.search import Searcher
from retrieval.store import Hit


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.post.id,
        "score": hit.score,
        "why": hit.why,
        "post": hit.post.model_dump(mode="json", exclude={"raw"}, exclude_none=True),
    }


def build_app(daemon: Daemon, searcher: Searcher) -> FastAPI:
    app = FastAPI(title="quipfeed ingest daemon", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body = daemon.health()
        try:
            body["bus_lag"] = await daemon.bus.lag()
        except Exception as exc:  # Redis down: say so rather than fail the probe's parse
            body["status"], body["error"] = "down", f"bus unreachable: {exc!r}"
        return JSONResponse(body, status_code=503 if body["status"] == "down" else 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        daemon.metrics.bus_lag.set(await daemon.bus.lag())
        daemon.metrics.posts_total.set(await asyncio.to_thread(daemon.store.count))
        return Response(daemon.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return await collect_stats(daemon.bus, daemon.store)

    @app.get("/dead-letters")
    async def dead_letters(limit: int = Query(50, ge=1, le=10_000)) -> list[dict[str, Any]]:
        return [letter.__dict__ for letter in await daemon.bus.dead_letters(limit)]

    @app.get("/search")
    async def search(
        q: str,
        k: int = Query(10, ge=1, le=200),
        since_s: float | None = Query(None, gt=0),
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        since = timedelta(seconds=since_s) if since_s else None
        try:
            hits = await asyncio.to_thread(searcher.search, q, k=k, since=since, as_of=now)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return [hit_json(h) for h in hits]

    return app
