"""The daemon's HTTP face: health, Prometheus metrics, stats, dead letters and search.

While a daemon owns the embedded shard, `quipfeed stats` and `quipfeed search` ask it
here instead of opening the shard themselves.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from ingest.daemon import Daemon
from ingest.stats import collect_stats
from retrieval.search import Searcher
from retrieval.store import StoreUnavailable, hit_json

__all__ = ["STORE_PROBE_S", "build_app", "hit_json"]

# How long /healthz waits for the store to answer a count before calling it down.
STORE_PROBE_S = 2.0


def build_app(daemon: Daemon, searcher: Searcher) -> FastAPI:
    app = FastAPI(title="quipfeed ingest daemon", docs_url=None, redoc_url=None)
    probes: list[asyncio.Future[int]] = []

    async def store_error() -> str | None:
        """Why the store does not answer a count, or None when it does. One probe at a time:
        a hung server must not pile blocked threads into the pool the indexers use."""
        if not probes or probes[-1].done():
            probes[:] = [asyncio.ensure_future(asyncio.to_thread(daemon.store.count))]
        try:
            await asyncio.wait_for(asyncio.shield(probes[-1]), STORE_PROBE_S)
        except TimeoutError:
            return f"no answer in {STORE_PROBE_S:g} s"
        except Exception as exc:
            return repr(exc)
        return None

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body = daemon.health()
        try:
            body["bus_lag"] = await daemon.bus.lag()
        except Exception as exc:  # Redis down: say so rather than fail the probe's parse
            body["status"], body["error"] = "down", f"bus unreachable: {exc!r}"
        # A store outage is "degraded", not "down": the feed keeps landing on the bus and the
        # indexers catch up by themselves once the store answers again.
        error = await store_error()
        body["store"] = "down" if error else "ok"
        if error:
            body["store_error"] = error
            if body["status"] == "ok":
                body["status"] = "degraded"
        return JSONResponse(body, status_code=503 if body["status"] == "down" else 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        # A scrape must answer while Redis or the store is away: that is when it matters.
        # Gauges it cannot refresh keep their last value; quipfeed_store_up says which.
        try:
            daemon.metrics.bus_lag.set(await daemon.bus.lag())
        except Exception:  # Redis away: /healthz says so; the last lag stays
            pass
        error = await store_error()
        daemon.metrics.store_up.set(0 if error else 1)
        if error is None:  # the probe finished and answered: its count is current
            daemon.metrics.posts_total.set(probes[-1].result())
        return Response(daemon.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        try:
            return await collect_stats(daemon.bus, daemon.store)
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc

    @app.get("/dead-letters")
    async def dead_letters(limit: int = Query(50, ge=1, le=10_000)) -> list[dict[str, Any]]:
        return [letter.__dict__ for letter in await daemon.bus.dead_letters(limit)]

    @app.get("/search")
    async def search(
        q: str,
        k: int = Query(10, ge=1, le=200),
        since_s: float | None = Query(None, gt=0),
        now: datetime | None = None,
        half_life_s: float | None = Query(None, gt=0),
        widen: bool = False,
    ) -> JSONResponse:
        """Hits as a JSON list; how the query was read (widened window …) in X-Quipfeed-Notes."""
        since = timedelta(seconds=since_s) if since_s else None
        half_life = timedelta(seconds=half_life_s) if half_life_s else None
        try:
            result = await asyncio.to_thread(
                searcher.find, q, k, since, now, half_life, widen=widen
            )
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        # Header values are latin-1; JSON with ASCII escapes always fits.
        notes = json.dumps(list(result.notes), ensure_ascii=True)
        return JSONResponse([hit_json(h) for h in result.hits], headers={"X-Quipfeed-Notes": notes})

    return app
