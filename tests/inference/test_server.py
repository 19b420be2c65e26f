"""`quipfeed serve-model`'s HTTP app: the endpoints routers and clients probe, errors, metrics."""

from __future__ import annotations

import time

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from inference.local import LocalEngine
from inference.replicas import Router, RouterOptions, metric_value
from inference.serve import ServerThread

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "news?"}]
BODY = {"messages": MESSAGES, "max_tokens": 4, "temperature": 0}


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/health_generate",
        "/server_info",
        "/get_server_info",
        "/model_info",
        "/get_model_info",
        "/v1/models",
        "/get_load",
        "/metrics",
    ],
)
def test_probe_endpoints_answer_200(tiny_server_url: str, path: str) -> None:
    assert httpx.get(tiny_server_url + path, timeout=30).status_code == 200


def test_model_card_names_the_model_and_its_window(
    tiny_server_url: str, tiny_engine: LocalEngine
) -> None:
    card = httpx.get(tiny_server_url + "/v1/models").json()["data"][0]
    assert card["id"] == tiny_engine.model_name
    assert card["max_model_len"] == tiny_engine.context_window
    assert (
        httpx.get(tiny_server_url + "/get_model_info").json()["model_path"]
        == tiny_engine.model_name
    )


def test_plain_openai_client_gets_a_reply_with_usage(tiny_server_url: str) -> None:
    client = OpenAI(base_url=tiny_server_url + "/v1", api_key="none", max_retries=0)
    r = client.chat.completions.create(model="any", messages=MESSAGES, max_tokens=4)
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert r.usage is not None and r.usage.completion_tokens <= 4
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": []},
        {"temperature": 9},
        {"n": 0},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        {"messages": "not a list"},
        {"regex": "("},
    ],
)
def test_bad_requests_get_a_400_in_openai_error_shape(
    tiny_server_url: str, patch: dict[str, object]
) -> None:
    r = httpx.post(tiny_server_url + "/v1/chat/completions", json={**BODY, **patch}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"]


def test_metrics_count_requests_and_tokens(tiny_server_url: str) -> None:
    def value(name: str) -> float:
        text = httpx.get(tiny_server_url + "/metrics").text
        lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
        return float(lines[0].split()[1]) if lines else 0.0

    before = value("quipfeed_engine_completion_tokens_total")
    httpx.post(tiny_server_url + "/v1/chat/completions", json=BODY, timeout=30).raise_for_status()
    assert value("quipfeed_engine_completion_tokens_total") >= before + 1
    assert (
        "quipfeed_http_time_to_first_token_seconds_bucket"
        in httpx.get(tiny_server_url + "/metrics").text
    )


def _chat_requests(url: str) -> float:
    """This server's own count of answered chat requests (its app's registry, not the engine's:
    the two servers below share one engine)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return metric_value(text, "quipfeed_http_chat_requests_total", outcome="ok")


def _the_one_that_served(urls: list[str], before: dict[str, float]) -> str:
    # A streamed reply is counted when its generator ends, just after the client's last read.
    deadline = time.monotonic() + 5
    while True:
        moved = [u for u in urls if _chat_requests(u) > before[u]]
        if moved or time.monotonic() > deadline:
            assert len(moved) == 1, moved
            return moved[0]
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.usefixtures("require_smg")
def test_smg_sends_prompts_sharing_a_long_prefix_to_the_same_worker(
    tiny_engine: LocalEngine,
) -> None:
    shared = "You are the feed's guide. " + "Posts say the storm passed the coast. " * 40
    with ServerThread(tiny_engine) as a, ServerThread(tiny_engine) as b:
        urls = [a.url, b.url]
        router = Router(urls, options=RouterOptions(policy="cache_aware")).start()
        try:
            client = OpenAI(base_url=router.url + "/v1", api_key="none", max_retries=0)
            served: list[str] = []
            for i in range(6):
                before = {u: _chat_requests(u) for u in urls}
                messages: list[ChatCompletionMessageParam] = [
                    {"role": "system", "content": shared},
                    {"role": "user", "content": f"question {i}: what now?"},
                ]
                if i % 2:  # streamed and whole replies alike
                    chunks = list(
                        client.chat.completions.create(
                            model="tiny-moe", messages=messages, max_tokens=4, stream=True
                        )
                    )
                    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
                else:
                    r = client.chat.completions.create(
                        model="tiny-moe", messages=messages, max_tokens=4
                    )
                    assert r.choices[0].finish_reason in {"stop", "length"}
                served.append(_the_one_that_served(urls, before))
        finally:
            router.stop()
    # The first request had no holder; every later one matched its prefix on that worker.
    # (Round robin would alternate, random would split: both fail here.)
    assert served == [served[0]] * 6, served
