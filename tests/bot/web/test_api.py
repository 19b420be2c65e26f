"""The HTTP API against the real app: real Redis, Qdrant Edge, the tiny model over uvicorn."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.bot.web.conftest import SECRET, LiveServer, record_trending, sse_events

QUESTION = "What are people saying about the rocket launch?"


def new_conversation(client: httpx.Client, **body: Any) -> str:
    r = client.post("/v1/conversations", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def turn(
    client: httpx.Client, path: str, body: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run a streamed turn to its end; events as dicts with parsed data."""
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [{**e, "data": json.loads(e["data"])} for e in sse_events(r.iter_lines())]


def ask(client: httpx.Client, cid: str, text: str = QUESTION) -> list[dict[str, Any]]:
    return turn(client, f"/v1/conversations/{cid}/messages", {"text": text})


def test_a_reply_streams_tokens_then_citations_then_suggestions_then_done(
    client: httpx.Client,
) -> None:
    cid = new_conversation(client, persona="quip")
    events = ask(client, cid)
    names = [e["event"] for e in events]
    assert names[0] == "turn" and names[-1] == "done"
    assert names.count("token") >= 1
    assert names.index("citations") > max(i for i, n in enumerate(names) if n == "token")
    assert names.index("suggestions") == names.index("citations") + 1
    assert names.index("done") == names.index("suggestions") + 1
    turn_id = events[0]["data"]["turn_id"]
    assert [e["id"] for e in events] == [f"{turn_id}.{i}" for i in range(len(events))]
    # What streamed is what was stored.
    view = client.get(f"/v1/conversations/{cid}").json()
    streamed = "".join(e["data"]["text"] for e in events if e["event"] == "token")
    answer = view["messages"][-1]
    assert answer["id"] == events[-1]["data"]["message_id"]
    assert answer["role"] == "assistant" and answer["content"].strip() == streamed.strip()
    assert view["messages"][0]["content"] == QUESTION
    assert view["title"].startswith("What are people saying")


def test_conversations_can_be_listed_renamed_exported_and_deleted(client: httpx.Client) -> None:
    first = new_conversation(client, title="First")
    second = new_conversation(client, persona="plain")
    listed = [c["id"] for c in client.get("/v1/conversations").json()]
    assert set(listed) == {first, second}
    r = client.patch(f"/v1/conversations/{first}", json={"title": "Renamed  here"})
    assert r.status_code == 200 and r.json()["title"] == "Renamed here"
    r = client.patch(f"/v1/conversations/{first}", json={"persona": "wire"})
    assert r.json()["persona"] == "wire"
    ask(client, second, "hello")
    exported = client.get(f"/v1/conversations/{second}/export")
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    data = exported.json()
    assert data["conversation"]["id"] == second
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert client.delete(f"/v1/conversations/{first}").json() == {"ok": True}
    assert [c["id"] for c in client.get("/v1/conversations").json()] == [second]
    assert client.get(f"/v1/conversations/{first}").status_code == 404


def test_another_session_cannot_see_or_touch_my_conversation(
    live: LiveServer, client: httpx.Client
) -> None:
    cid = new_conversation(client)
    ask(client, cid, "hi")
    other = httpx.post(f"{live.url}/v1/session").json()["token"]
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {other}"}) as them:
        assert them.get("/v1/conversations").json() == []
        assert them.get(f"/v1/conversations/{cid}").status_code == 404
        assert them.get(f"/v1/conversations/{cid}/export").status_code == 404
        assert them.patch(f"/v1/conversations/{cid}", json={"title": "mine"}).status_code == 404
        assert (
            them.post(f"/v1/conversations/{cid}/messages", json={"text": "hi"}).status_code == 404
        )
        assert them.delete(f"/v1/conversations/{cid}").status_code == 404
    assert client.get(f"/v1/conversations/{cid}").json()["title"] != "mine"


def test_regenerate_adds_a_version_and_select_switches_between_versions(
    client: httpx.Client,
) -> None:
    cid = new_conversation(client)
    first = ask(client, cid)[-1]["data"]["message_id"]
    events = turn(client, f"/v1/conversations/{cid}/messages/{first}/regenerate")
    assert events[-1]["event"] == "done"
    second = events[-1]["data"]["message_id"]
    view = client.get(f"/v1/conversations/{cid}").json()
    answer = view["messages"][-1]
    assert answer["id"] == second and (answer["version"], answer["versions"]) == (2, 2)
    assert answer["sibling_ids"] == [first, second]
    back = client.post(f"/v1/conversations/{cid}/messages/{first}/select").json()
    assert back["messages"][-1]["id"] == first and back["messages"][-1]["version"] == 1
    assert client.get(f"/v1/conversations/{cid}").json()["messages"][-1]["id"] == first


def test_editing_a_question_answers_it_afresh_and_an_edited_answer_is_continued_from(
    client: httpx.Client,
) -> None:
    cid = new_conversation(client)
    events = ask(client, cid)
    question, answer = events[-1]["data"]["question_id"], events[-1]["data"]["message_id"]
    edited = turn(
        client,
        f"/v1/conversations/{cid}/messages/{question}/edit",
        {"text": "What is the feed saying about football?"},
    )
    assert edited[-1]["event"] == "done"
    view = client.get(f"/v1/conversations/{cid}").json()
    assert view["messages"][0]["content"] == "What is the feed saying about football?"
    assert view["messages"][0]["versions"] == 2
    # Back to the first question's line, then rewrite its answer by hand.
    client.post(f"/v1/conversations/{cid}/messages/{answer}/select")
    done = turn(
        client, f"/v1/conversations/{cid}/messages/{answer}/edit", {"text": "My **own** answer."}
    )
    assert [e["event"] for e in done] == ["turn", "done"]
    assert done[-1]["data"]["finish_reason"] == "edited"
    view = client.get(f"/v1/conversations/{cid}").json()
    assert view["messages"][-1]["content"] == "My **own** answer."
    assert view["messages"][-1]["edited"] is True
    # The next question continues from the edited answer.
    nxt = ask(client, cid, "tell me more")
    view = client.get(f"/v1/conversations/{cid}").json()
    assert view["messages"][2]["parent_id"] == done[-1]["data"]["message_id"]
    assert view["messages"][-1]["id"] == nxt[-1]["data"]["message_id"]


def test_feedback_is_stored_with_the_answer(client: httpx.Client) -> None:
    cid = new_conversation(client)
    answer = ask(client, cid, "hi")[-1]["data"]["message_id"]
    r = client.post(
        f"/v1/conversations/{cid}/messages/{answer}/feedback",
        json={"rating": "down", "note": "too short"},
    )
    assert r.status_code == 200
    stored = next(
        m
        for m in client.get(f"/v1/conversations/{cid}/export").json()["messages"]
        if m["id"] == answer
    )
    assert [(f["rating"], f["note"]) for f in stored["feedback"]] == [("down", "too short")]
    bad = client.post(f"/v1/conversations/{cid}/messages/{answer}/feedback", json={"rating": "meh"})
    assert bad.status_code == 422


def test_a_dropped_stream_resumes_from_last_event_id_without_losing_text(
    scripted_live: LiveServer,
) -> None:
    token = httpx.post(f"{scripted_live.url}/v1/session").json()["token"]
    with httpx.Client(
        base_url=scripted_live.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        cid = new_conversation(c)
        seen: list[dict[str, str]] = []
        with c.stream("POST", f"/v1/conversations/{cid}/messages", json={"text": QUESTION}) as r:
            for event in sse_events(r.iter_lines()):
                seen.append(event)
                if len(seen) == 4:
                    break  # the connection drops here, mid-answer
        turn_id = json.loads(seen[0]["data"])["turn_id"]
        with c.stream(
            "GET", f"/v1/turns/{turn_id}/events", headers={"Last-Event-ID": seen[-1]["id"]}
        ) as r:
            assert r.status_code == 200
            rest = list(sse_events(r.iter_lines()))
        ids = [e["id"] for e in seen + rest]
        assert ids == [f"{turn_id}.{i}" for i in range(len(ids))]  # nothing lost, nothing twice
        assert rest[-1]["event"] == "done"
        text = "".join(json.loads(e["data"])["text"] for e in seen + rest if e["event"] == "token")
        stored = c.get(f"/v1/conversations/{cid}").json()["messages"][-1]
        assert stored["id"] == json.loads(rest[-1]["data"])["message_id"]
        assert "Launch news" in text and text.split()[-1] == "end."


def test_stop_ends_a_turn_early(scripted_live: LiveServer) -> None:
    token = httpx.post(f"{scripted_live.url}/v1/session").json()["token"]
    with httpx.Client(
        base_url=scripted_live.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        cid = new_conversation(c)
        events: list[dict[str, str]] = []
        with c.stream("POST", f"/v1/conversations/{cid}/messages", json={"text": QUESTION}) as r:
            for event in sse_events(r.iter_lines()):
                events.append(event)
                if event["event"] == "token" and len(events) == 3:
                    turn_id = json.loads(events[0]["data"])["turn_id"]
                    assert c.post(f"/v1/turns/{turn_id}/stop").json() == {"ok": True}
        assert events[-1]["event"] == "stopped"
        assert "done" not in [e["event"] for e in events]
        assert c.post("/v1/turns/nope/stop").status_code == 404


def test_requests_need_a_valid_session_or_api_key(live: LiveServer) -> None:
    assert httpx.get(f"{live.url}/v1/conversations").status_code == 401
    bad = httpx.get(f"{live.url}/v1/conversations", headers={"Authorization": "Bearer x.y"})
    assert bad.status_code == 401 and "invalid session" in bad.json()["error"]["message"]
    token = httpx.post(f"{live.url}/v1/session").json()["token"]
    body, _, sig = token.partition(".")
    forged = f"{body[:-2]}xx.{sig}"
    assert (
        httpx.get(
            f"{live.url}/v1/conversations", headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    assert (
        httpx.get(f"{live.url}/v1/conversations", headers={"X-API-Key": "not-a-key"}).status_code
        == 401
    )


async def test_api_keys_act_as_their_own_owner(
    web_redis_url: str, web_store: Any, minilm: Any
) -> None:
    app = await _factory(web_redis_url, web_store, minilm, api_keys={"backend": "k" * 24})
    async with _client(app) as c:
        r = await c.post("/v1/conversations", headers={"X-API-Key": "k" * 24}, json={})
        assert r.status_code == 201
        mine = await c.get("/v1/conversations", headers={"Authorization": "Bearer " + "k" * 24})
        assert [x["id"] for x in mine.json()] == [r.json()["id"]]
        token = (await c.post("/v1/session")).json()["token"]
        theirs = await c.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"})
        assert theirs.json() == []


async def test_cors_admits_only_the_allowed_origins(
    web_redis_url: str, web_store: Any, minilm: Any
) -> None:
    app = await _factory(web_redis_url, web_store, minilm, allowed_origins=["https://good.example"])
    async with _client(app) as c:
        pre = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        ok = await c.options("/v1/session", headers={"Origin": "https://good.example", **pre})
        assert ok.headers.get("access-control-allow-origin") == "https://good.example"
        evil = await c.options("/v1/session", headers={"Origin": "https://evil.example", **pre})
        assert "access-control-allow-origin" not in evil.headers
        assert (
            await c.post("/v1/session", headers={"Origin": "https://evil.example"})
        ).status_code == 403
        assert (
            await c.post("/v1/session", headers={"Origin": "https://good.example"})
        ).status_code == 200


async def test_rate_limits_answer_429_with_retry_after(
    web_redis_url: str, web_store: Any, minilm: Any
) -> None:
    app = await _factory(
        web_redis_url, web_store, minilm, requests_per_minute_session=3, sessions_per_minute_ip=2
    )
    async with _client(app) as c:
        token = (await c.post("/v1/session")).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        codes = [(await c.get("/v1/conversations", headers=auth)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = await c.get("/v1/conversations", headers=auth)
        assert int(limited.headers["retry-after"]) >= 1
        assert (await c.post("/v1/session")).status_code == 200
        assert (await c.post("/v1/session")).status_code == 429  # new sessions per IP


async def test_oversized_requests_are_refused_with_413(
    web_redis_url: str, web_store: Any, minilm: Any
) -> None:
    app = await _factory(
        web_redis_url, web_store, minilm, max_body_bytes=2_000, max_message_chars=100
    )
    async with _client(app) as c:
        auth = {"Authorization": "Bearer " + (await c.post("/v1/session")).json()["token"]}
        cid = (await c.post("/v1/conversations", headers=auth, json={})).json()["id"]
        big = await c.post(
            f"/v1/conversations/{cid}/messages", headers=auth, json={"text": "x" * 5_000}
        )
        assert big.status_code == 413
        long = await c.post(
            f"/v1/conversations/{cid}/messages", headers=auth, json={"text": "x" * 500}
        )
        assert long.status_code == 413 and "100 characters" in long.json()["error"]["message"]

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b"x" * 500

        chunked = await c.post(f"/v1/conversations/{cid}/messages", headers=auth, content=chunks())
        assert chunked.status_code == 413


def test_personas_and_search(client: httpx.Client) -> None:
    names = [p["name"] for p in client.get("/v1/personas").json()]
    assert {"quip", "plain", "wire"} <= set(names)
    cards = client.get("/v1/search", params={"q": "rocket launch hostile post", "k": 3}).json()
    assert len(cards) == 3 and [c["number"] for c in cards] == [1, 2, 3]
    assert cards[0]["author"] == "mallory.bsky.social"
    assert cards[0]["url"] is None  # a javascript: URL is never handed to a browser
    assert client.get("/v1/search", params={"q": ""}).status_code == 422


def test_trending_lists_topics_the_indexer_counted(
    client: httpx.Client, web_redis_url: str, web_posts: list[Any]
) -> None:
    record_trending(web_redis_url, web_posts[:5], "quipfeedlaunchday")
    items = client.get("/v1/trending", params={"limit": 50}).json()
    item = next(i for i in items if i["label"] == "#quipfeedlaunchday")
    assert item["posts"] == 5
    assert 1 <= len(item["sample"]) <= 3
    assert {c["text"] for c in item["sample"]} <= {p.text[:280] for p in web_posts[:5]}


async def test_a_server_without_a_trending_source_says_so(
    web_redis_url: str, web_store: Any, minilm: Any
) -> None:
    app = await _factory(web_redis_url, web_store, minilm, trending=False)
    async with _client(app) as c:
        auth = {"Authorization": "Bearer " + (await c.post("/v1/session")).json()["token"]}
        r = await c.get("/v1/trending", headers=auth)
        assert r.status_code == 503 and "trending" in r.json()["error"]["message"]


def test_unknown_ids_and_bad_input_answer_4xx_with_a_message(client: httpx.Client) -> None:
    assert client.get("/v1/conversations/nope").status_code == 404
    assert client.post("/v1/conversations", json={"persona": "nobody"}).status_code == 404
    cid = new_conversation(client)
    r = client.post(f"/v1/conversations/{cid}/messages", json={"text": "   "})
    assert r.status_code == 422 and r.json()["error"]["message"]
    r = client.post(f"/v1/conversations/{cid}/messages/nope/regenerate")
    assert r.status_code == 404
    r = client.post(
        f"/v1/conversations/{cid}/messages",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_openai_clients_can_talk_to_a_persona(live: LiveServer, session_token: str) -> None:
    import openai

    oa = openai.OpenAI(base_url=f"{live.url}/v1", api_key=session_token, max_retries=0)
    assert "quip" in [m.id for m in oa.models.list().data]
    reply = oa.chat.completions.create(
        model="quip",
        messages=[
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    streamed = oa.chat.completions.create(
        model="quip", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    parts = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert "".join(parts)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    # Stateless: nothing is left in the caller's conversation list.
    listed = httpx.get(
        f"{live.url}/v1/conversations", headers={"Authorization": f"Bearer {session_token}"}
    ).json()
    assert listed == []


def test_openapi_is_published_with_every_endpoint(live: LiveServer) -> None:
    spec = httpx.get(f"{live.url}/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/v1/session",
        "/v1/personas",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/export",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/messages/{message_id}/regenerate",
        "/v1/conversations/{conversation_id}/messages/{message_id}/edit",
        "/v1/conversations/{conversation_id}/messages/{message_id}/select",
        "/v1/conversations/{conversation_id}/messages/{message_id}/feedback",
        "/v1/turns/{turn_id}/events",
        "/v1/turns/{turn_id}/stop",
        "/v1/trending",
        "/v1/search",
        "/v1/chat/completions",
        "/v1/models",
    } <= paths


def test_widget_and_demo_page_are_served(live: LiveServer) -> None:
    js = httpx.get(f"{live.url}/widget.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "attachShadow" in js.text
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and 'src="/widget.js"' in page.text


async def _factory(
    web_redis_url: str, web_store: Any, minilm: Any, *, trending: bool = True, **options: Any
) -> Any:
    from tests.bot.scripted_engine import ScriptedEngine
    from tests.bot.web.conftest import make_app_factory

    return await make_app_factory(
        web_redis_url,
        web_store,
        minilm,
        ScriptedEngine(["ok"]),
        trending=trending,
        session_secret=SECRET,
        **options,
    )()


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
