"""The HTTP API while the post store is out of reach (its Qdrant Edge shard held open by another
process): a turn still streams, led by a `notice` event, cites nothing, and is stored as an
answer without the feed; once the shard is free the next turn has fresh posts again."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.chat import FEED_UNAVAILABLE
from retrieval.post import Post
from tests.bot.web.conftest import SECRET, LiveServer, _tiny_engine, sse_events
from tests.shard_holder import ShardHolder

QUESTION = "What are people saying about the rocket launch?"


def app_over_data_dir(
    redis_url: str, data_dir: Path, embedder: Any, engine: Any
) -> Callable[[], Awaitable[Any]]:
    """The app as `quipfeed web` composes it: search through `ReopeningSearch` over the
    settings' data dir (not a store object handed in)."""

    async def make() -> Any:
        import redis.asyncio as aioredis

        from bot.chat import Chat, ChatConfig
        from bot.limits import Limits
        from bot.persona import load_personas
        from bot.web.app import create_app
        from bot.web.chat_adapter import BotChatService
        from bot.web.options import WebOptions
        from quipfeed.feed_search import ReopeningSearch
        from quipfeed.settings import Settings

        search = ReopeningSearch(Settings(data_dir=data_dir), embedder=embedder)
        chat = Chat(
            aioredis.from_url(redis_url),
            engine,
            search,
            load_personas(),
            ChatConfig(max_reply_tokens=24, limits=Limits(messages_per_minute=0, tokens_per_day=0)),
        )
        options = WebOptions(session_secret=SECRET, turns_per_minute_session=600)
        return create_app(BotChatService(chat), options)

    return make


@dataclass
class Unreachable:
    server: LiveServer
    holder: ShardHolder
    client: httpx.Client


@pytest.fixture
def unreachable(
    tmp_path: Path,
    web_redis_url: str,
    minilm: Any,
    web_posts: list[Post],
) -> Iterator[Unreachable]:
    from retrieval.edge_store import EdgeStore

    shard = tmp_path / "data" / "qdrant" / "posts"
    store = EdgeStore(shard, minilm.dim)
    store.upsert(web_posts, minilm.embed([p.text for p in web_posts]).tolist())
    store.close()
    with ShardHolder(shard) as holder:
        make = app_over_data_dir(web_redis_url, tmp_path / "data", minilm, _tiny_engine())
        server = LiveServer(make).start()
        token = httpx.post(f"{server.url}/v1/session").json()["token"]
        with httpx.Client(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            yield Unreachable(server, holder, client)
        server.stop()


def ask(client: httpx.Client, cid: str, text: str = QUESTION) -> list[dict[str, Any]]:
    with client.stream("POST", f"/v1/conversations/{cid}/messages", json={"text": text}) as r:
        assert r.status_code == 200, r.read()
        return [{**e, "data": json.loads(e["data"])} for e in sse_events(r.iter_lines())]


def test_store_unreachable_the_turn_streams_with_a_notice_and_no_citations(
    unreachable: Unreachable,
) -> None:
    client = unreachable.client
    cid = client.post("/v1/conversations", json={"persona": "quip"}).json()["id"]
    events = ask(client, cid)
    names = [e["event"] for e in events]
    assert names[:2] == ["turn", "notice"], names
    assert events[1]["data"] == {"kind": "feed_unavailable", "text": FEED_UNAVAILABLE}
    assert "token" in names and names[-1] == "done" and "error" not in names
    assert next(e for e in events if e["event"] == "citations")["data"] == {"citations": []}

    # The stored conversation shows the notice on the answer; the export records it.
    view = client.get(f"/v1/conversations/{cid}").json()
    question, answer = view["messages"]
    assert answer["id"] == events[-1]["data"]["message_id"]
    assert answer["notice"] == FEED_UNAVAILABLE and answer["citations"] == []
    assert question["notice"] is None
    streamed = "".join(e["data"]["text"] for e in events if e["event"] == "token")
    assert answer["content"].strip() == streamed.strip() != ""
    exported = client.get(f"/v1/conversations/{cid}/export").json()
    assert [m["feed_unavailable"] for m in exported["messages"]] == [True, True]
    assert all(m["cited"] == [] for m in exported["messages"])
    markdown = client.get(f"/v1/conversations/{cid}/export", params={"format": "markdown"})
    assert "live feed was unreachable" in markdown.text

    # Search itself answers 503 with a plain reason, not a 500.
    r = client.get("/v1/search", params={"q": "rocket launch", "k": 3})
    assert r.status_code == 503 and "unreachable" in r.json()["error"]["message"]

    # The shard is free again: the next turn has the feed (no notice, posts behind it).
    unreachable.holder.release()
    events = ask(client, cid)
    assert "notice" not in [e["event"] for e in events]
    view = client.get(f"/v1/conversations/{cid}").json()
    assert view["messages"][-1]["notice"] is None
    assert client.get("/v1/search", params={"q": "rocket launch", "k": 3}).json()
