"""`PostSearch` over the running ingest daemon's `GET /search` (the daemon owns the shard)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError

from bot.search import SearchUnavailable
from inference import request_id
from retrieval.post import Post
from retrieval.store import Hit


class RemoteSearch:
    """Asks `base_url` (e.g. http://127.0.0.1:8765). A query the daemon rejects (422) finds
    nothing; an unreachable daemon or a malformed answer raises `SearchUnavailable`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    async def search(
        self, text: str, *, k: int, since: timedelta | None, as_of: datetime | None
    ) -> list[Hit]:
        params: dict[str, Any] = {"q": text, "k": k}
        if since is not None:
            params["since_s"] = since.total_seconds()
        if as_of is not None:
            params["now"] = as_of.isoformat()
        try:
            # The turn's request id travels on, so the daemon's search log line carries it.
            rid = request_id.current()
            headers = {request_id.HEADER: rid} if rid else None
            response = await self._http.get("/search", params=params, headers=headers)
        except httpx.HTTPError as e:
            raise SearchUnavailable(
                f"the ingest daemon at {self._http.base_url} did not answer: {e}"
            ) from e
        if response.status_code == 422:
            return []
        if response.status_code != 200:
            raise SearchUnavailable(f"the ingest daemon answered {response.status_code} to /search")
        try:
            return [
                Hit(
                    post=Post.model_validate(row["post"]),
                    score=float(row["score"]),
                    why=dict(row.get("why") or {}),
                )
                for row in response.json()
            ]
        except (ValueError, KeyError, TypeError, ValidationError) as e:
            raise SearchUnavailable(f"the ingest daemon's /search answer is malformed: {e}") from e

    async def aclose(self) -> None:
        await self._http.aclose()
