"""The daemon's /search endpoint: hits as before, plus thread context and how it read the query."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx

from ingest.http_api import build_app
from retrieval.edge_store import EdgeStore
from retrieval.embedder import Embedder
from retrieval.search import Searcher
from tests.retrieval.builders import T0, add, make_post


async def test_search_endpoint_returns_context_and_notes(
    store: EdgeStore, embedder: Embedder
) -> None:
    add(
        store,
        embedder,
        [
            make_post("parent", "the new stadium roof leaks", hours=0),
            make_post("child", "told you the roof would leak", hours=1, reply_to="parent"),
        ],
    )
    app = build_app(None, Searcher(store, embedder))  # type: ignore[arg-type]  # no daemon needed
    now = (T0 + timedelta(hours=20)).isoformat()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as c:
        plain = await c.get("/search", params={"q": "roof leak", "k": 2, "now": now})
        assert plain.status_code == 200
        child = next(row for row in plain.json() if row["id"] == "child")
        assert [p["id"] for p in child["context"]] == ["parent"]
        assert json.loads(plain.headers["X-Quipfeed-Notes"]) == []

        widened = await c.get(
            "/search", params={"q": "roof leak since:1h", "now": now, "widen": "true"}
        )
        assert widened.json() and "widened" in json.loads(widened.headers["X-Quipfeed-Notes"])[0]

        bad = await c.get("/search", params={"q": "roof in the last 900 years", "now": now})
        assert bad.status_code == 422 and "30 years" in bad.json()["detail"]
