"""Request ids and Prometheus metrics of the web app, over real parts: the app on uvicorn, real
Redis and Qdrant Edge, and the model behind the real OpenAI-compatible model server (the tiny
MoE served by `inference.server` on 127.0.0.1, reached by `OpenAIEngine` over HTTP)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference.request_id import install_log_records
from quipfeed.logs import JsonFormatter
from tests.bot.web.conftest import LiveServer, _tiny_engine, make_app_factory, sse_events

MESSAGES_ROUTE = "/v1/conversations/{conversation_id}/messages"


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    from inference.serve import ServerThread

    server = ServerThread(_tiny_engine()).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def traced(web_redis_url: str, web_store, minilm, model_server: str) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """The web app whose model is the tiny MoE behind the model server, with its metrics."""
    from bot.web.metrics import WebMetrics
    from inference.openai_engine import OpenAIEngine

    install_log_records()  # what `quipfeed.logs.configure` does in every served process

    async def make() -> Any:
        engine = OpenAIEngine(model_server)
        await engine.start()  # learns the context window the server reports
        factory = make_app_factory(web_redis_url, web_store, minilm, engine, metrics=WebMetrics())
        return await factory()

    server = LiveServer(make).start()
    yield server
    server.stop()


@pytest.fixture
def client(traced: LiveServer) -> Iterator[httpx.Client]:
    token = httpx.post(f"{traced.url}/v1/session").json()["token"]
    with httpx.Client(
        base_url=traced.url, timeout=120, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c


def ask(client: httpx.Client, text: str, headers: dict[str, str] | None = None) -> httpx.Headers:
    """One streamed turn to its end; the response headers."""
    cid = client.post("/v1/conversations", json={"persona": "quip"}).json()["id"]
    with client.stream(
        "POST", f"/v1/conversations/{cid}/messages", json={"text": text}, headers=headers
    ) as r:
        assert r.status_code == 200, r.read()
        names = [e.get("event") for e in sse_events(r.iter_lines())]
    assert names[0] == "turn" and names[-1] == "done", names
    return r.headers


def records_for(caplog: pytest.LogCaptureFixture, rid: str, wanted: set[str]) -> dict[str, Any]:
    """The first record per logger in `wanted` carrying `rid`, waiting up to 10 s for the
    model server's line (it logs when its stream closes, just after the client has read it)."""
    deadline = time.monotonic() + 10
    while True:
        found: dict[str, Any] = {}
        for record in caplog.records:
            if getattr(record, "request_id", None) == rid and record.name in wanted:
                found.setdefault(record.name, record)
        if set(found) == wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_callers_request_id_reaches_the_web_retrieval_and_model_server_logs(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rid = "trace-web.0001"
    headers = ask(client, "What are people saying about the rocket launch?", {"X-Request-ID": rid})
    assert headers["x-request-id"] == rid
    wanted = {"bot.web.turns", "retrieval.search", "inference.server"}
    found = records_for(caplog, rid, wanted)
    assert set(found) == wanted, f"only {sorted(found)} logged {rid}"
    turn = found["bot.web.turns"]
    assert turn.getMessage() == "turn" and turn.outcome == "completed" and turn.tokens > 0
    assert found["retrieval.search"].hits > 0
    assert found["inference.server"].outcome == "ok"
    # The structured (JSON) line carries it, and never the question's text.
    for record in found.values():
        line = json.loads(JsonFormatter().format(record))
        assert line["request_id"] == rid
        assert "rocket" not in json.dumps(line)


def test_each_turn_without_a_usable_id_gets_a_fresh_one_of_its_own(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = ask(client, "hello")["x-request-id"]
    bad = "spaces are not allowed " * 4 + "and-neither-is-length"
    second = ask(client, "hello again", {"X-Request-ID": bad})["x-request-id"]
    assert first != second and bad not in second
    assert all(len(h) == 16 and h.isalnum() for h in (first, second))
    for rid in (first, second):
        assert set(records_for(caplog, rid, {"bot.web.turns", "inference.server"})) == {
            "bot.web.turns",
            "inference.server",
        }
    # Plain requests echo an id too, refusals included.
    assert client.get("/v1/conversations/nope").headers["x-request-id"]


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_real_turn_its_first_token_retrieval_and_http_requests(
    client: httpx.Client,
) -> None:
    before = scrape(client)
    ask(client, "What is said about Tesla?")
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("quipfeed_web_turns_started_total", kind="message") == 1
    assert moved("quipfeed_web_turns_completed_total", kind="message") == 1
    assert moved("quipfeed_web_time_to_first_token_seconds_count") == 1
    assert moved("quipfeed_web_time_to_first_token_seconds_sum") > 0
    assert moved("quipfeed_web_tokens_streamed_total") >= 1
    assert moved("quipfeed_web_retrieval_seconds_count") >= 1
    route = {"method": "POST", "route": MESSAGES_ROUTE, "status": "200"}
    assert moved("quipfeed_web_http_requests_total", **route) == 1
    created = {"method": "POST", "route": "/v1/conversations", "status": "201"}
    assert moved("quipfeed_web_http_requests_total", **created) == 1
    assert value(after, "quipfeed_web_active_streams") == 0
    assert value(after, "quipfeed_web_turns_active") == 0
    # Paths with ids are counted by their template, never by the raw path.
    client.get("/v1/conversations/not-a-real-id")
    again = scrape(client)
    template = {"method": "GET", "route": "/v1/conversations/{conversation_id}", "status": "404"}
    assert value(again, "quipfeed_web_http_requests_total", **template) >= 1
    assert not any("not-a-real-id" in str(labels) for _, labels in again)


def test_an_openai_style_completion_counts_as_a_turn_of_its_own_kind(
    client: httpx.Client,
) -> None:
    before = scrape(client)
    r = client.post(
        "/v1/chat/completions",
        json={"model": "quip", "messages": [{"role": "user", "content": "Tesla?"}]},
        headers={"X-Request-ID": "openai-1"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "openai-1"
    after = scrape(client)
    for name in ("quipfeed_web_turns_started_total", "quipfeed_web_turns_completed_total"):
        assert value(after, name, kind="openai") - value(before, name, kind="openai") == 1


def test_a_stopped_turn_counts_as_failed_with_reason_stopped(scripted_live: LiveServer) -> None:
    # The scripted model says a word every 30 ms: the turn is still generating when stopped.
    token = httpx.post(f"{scripted_live.url}/v1/session").json()["token"]
    with httpx.Client(
        base_url=scripted_live.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        before = scrape(c)
        cid = c.post("/v1/conversations", json={}).json()["id"]
        with c.stream("POST", f"/v1/conversations/{cid}/messages", json={"text": "launch?"}) as r:
            events = sse_events(r.iter_lines())
            turn_id = json.loads(next(events)["data"])["turn_id"]
            assert next(e for e in events if e.get("event") == "token")
            assert c.post(f"/v1/turns/{turn_id}/stop").status_code == 200
            names = [e.get("event") for e in events]
        assert names[-1] == "stopped"
        after = scrape(c)
    failed = {"kind": "message", "reason": "stopped"}
    assert (
        value(after, "quipfeed_web_turns_failed_total", **failed)
        - value(before, "quipfeed_web_turns_failed_total", **failed)
        == 1
    )
    assert value(after, "quipfeed_web_turns_completed_total", kind="message") == value(
        before, "quipfeed_web_turns_completed_total", kind="message"
    )
    assert value(after, "quipfeed_web_turns_active") == 0
