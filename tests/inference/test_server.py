"""`quipfeed serve-model`'s HTTP app: the endpoints routers and clients probe, errors, metrics."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from inference.local import LocalEngine
from inference.replicas import router_executable
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(router_executable() is None, reason="sglang-router not installed")
def test_sglang_router_fronts_two_local_servers_with_cache_aware_routing(
    tiny_engine: LocalEngine,
) -> None:
    with ServerThread(tiny_engine) as a, ServerThread(tiny_engine) as b:
        port = _free_port()
        router = subprocess.Popen(
            [
                router_executable() or "sglang-router",
                "launch",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--worker-urls",
                a.url,
                b.url,
                "--policy",
                "cache_aware",
                "--log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=2)
            r = client.chat.completions.create(model="tiny-moe", messages=MESSAGES, max_tokens=4)
            assert r.choices[0].finish_reason in {"stop", "length"}
            stream = client.chat.completions.create(
                model="tiny-moe",
                messages=MESSAGES,
                max_tokens=4,
                stream=True,
            )
            assert any(c.choices and c.choices[0].finish_reason for c in stream)
        finally:
            router.terminate()
            router.wait(10)
