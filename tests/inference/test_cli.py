"""`serve-model` and `bench inference`, registered on a Typer app the way quipfeed's CLI does."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from quipfeed.cli_inference import register

# Runs quipfeed's inference commands in a child process, registered as quipfeed's CLI does.
_CLI = (
    "import typer; from quipfeed.cli_inference import register; a = typer.Typer(); "
    "b = typer.Typer(); a.add_typer(b, name='bench'); register(a, b); a()"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    bench = typer.Typer()
    root.add_typer(bench, name="bench")
    register(root, bench)
    return root


def test_help_lists_both_commands(app: typer.Typer) -> None:
    runner = CliRunner()
    assert "serve-model" in runner.invoke(app, ["--help"]).output
    assert "inference" in runner.invoke(app, ["bench", "--help"]).output


def test_serve_model_needs_a_model(app: typer.Typer) -> None:
    r = CliRunner().invoke(app, ["serve-model"])
    assert r.exit_code != 0
    assert "--model" in r.output


def test_serve_model_rejects_a_folder_that_is_not_a_model(app: typer.Typer, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["serve-model", "--model", str(tmp_path)])
    assert r.exit_code == 1
    assert "config.json" in r.output


def test_serve_model_prints_an_sglang_profile(app: typer.Typer) -> None:
    r = CliRunner().invoke(
        app, ["serve-model", "--sglang-profile", "grok-2-tp8", "--port", "31000"]
    )
    assert r.exit_code == 0, r.output
    assert "--tp-size 8 --quantization fp8" in r.output and "--port 31000" in r.output
    bad = CliRunner().invoke(app, ["serve-model", "--sglang-profile", "nope"])
    assert bad.exit_code != 0 and "grok-2-tp8" in bad.output


def test_bench_inference_prints_json_figures(app: typer.Typer, tiny_model_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        [
            "bench",
            "inference",
            "--json",
            "--concurrency",
            "2",
            "--repeats",
            "1",
            "--max-tokens",
            "4",
            "--turns",
            "2",
            "--model",
            str(tiny_model_path),
            "--server-thread",
        ],
        env={"SGLANG_URL": ""},
    )
    assert r.exit_code == 0, r.output
    # stdout only: logs (JSON lines) go to stderr, which the runner also shows in `output`.
    report = json.loads(r.stdout)
    local = report["local"]
    assert local["in_process"][0]["concurrency"] == 2 and local["in_process"][0]["tokens_per_s"] > 0
    assert {"tokens_per_s_pct", "ttft_ms"} <= set(local["overhead"][0])
    assert len(local["prefix_reuse"]["layout_shared_prefix_ratio"]) == 1
    assert local["client_cost"]["ours_us_per_chunk"] > 0
    assert "sglang" not in report


@pytest.mark.slow
def test_serve_model_serves_over_http_in_a_real_process(tiny_model_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import typer; from quipfeed.cli_inference import register; a = typer.Typer(); "
        "b = typer.Typer(); a.add_typer(b, name='bench'); register(a, b); a()"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "serve-model",
            "--model",
            str(tiny_model_path),
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        r = httpx.post(
            url + "/v1/chat/completions",
            timeout=30,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
@pytest.mark.usefixtures("require_smg")
def test_serve_model_with_workers_runs_them_behind_the_router_and_stops_them_all(
    tiny_model_path: Path,
) -> None:
    port, metrics_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "serve-model",
            "--model",
            str(tiny_model_path),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--workers",
            "1",
            "--router-metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    router, worker = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    try:
        for _ in range(1200):
            with contextlib.suppress(httpx.HTTPError, ValueError):
                listed = httpx.get(router + "/workers", timeout=1).json()["workers"]
                if [w["url"] for w in listed if w["is_healthy"]] == [worker]:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        r = httpx.post(
            router + "/v1/chat/completions",
            timeout=60,
            json={
                "model": "tiny-moe",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            },
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        assert (
            "smg_router_requests_total"
            in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"QUIPFEED_MODEL__URL={router}/v1" in err
    # SIGTERM stopped the router and the worker too, not just the parent.
    for url in (router, worker):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)


def test_router_bench_counts_cached_share_and_ttft_from_turn_two_only() -> None:
    from bench.gateway import Turn, summarise

    rows = [
        Turn(0, 0, 1.0, 0, 100, 10),  # turn 1: nothing cached yet, slow; left out of the figures
        Turn(0, 1, 0.2, 90, 120, 10),
        Turn(0, 2, 0.4, 130, 140, 10),
        Turn(1, 1, 0.3, 0, 120, 10),  # a miss (e.g. the wrong worker) counts against the share
    ]
    ceiling = {(0, 1): 100, (0, 2): 135, (1, 1): 100}  # what the layout made reusable
    figures = summarise(rows, [2.0, 4.0], ceiling)
    assert figures["cached_share_from_turn_2"] == round(220 / 380, 3)
    assert figures["layout_ceiling_from_turn_2"] == round(335 / 380, 3)
    assert figures["cached_of_reusable"] == round(220 / 335, 3)
    assert figures["ttft_ms_p50_from_turn_2"] == 300.0
    assert figures["ttft_ms_p99_from_turn_2"] == 400.0
    assert figures["ttft_ms_p50_turn_1"] == 1000.0
    assert figures["tokens_per_s"] == round(40 / 6.0, 1)
    assert figures["requests"] == 4


def test_the_layout_ceiling_is_the_previous_prompt_and_reply_as_a_prefix() -> None:
    from bench.gateway import Turn, ceiling_tokens
    from inference.messages import ChatMessage

    def tokenize(messages: list[ChatMessage]) -> list[int]:
        return [ord(ch) for m in messages for ch in f"<{m.role}>{m.content}"]

    first = [ChatMessage(role="system", content="sys"), ChatMessage(role="user", content="q1")]
    second = [*first, ChatMessage(role="assistant", content="a1")]
    second.append(ChatMessage(role="user", content="posts q2"))
    rows = [
        Turn(0, 0, 0.1, 0, 0, 0, first, "a1"),
        Turn(0, 1, 0.1, 0, 0, 0, second, "a2"),
    ]
    reused = len("<system>sys<user>q1<assistant>a1")
    assert ceiling_tokens(rows, tokenize) == {(0, 1): reused}
