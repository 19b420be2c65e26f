"""Real `smg` (SGLang's Model Gateway) in front of real worker processes
(`python -m inference.serve`, the app of `quipfeed serve-model`): cache-aware stickiness,
spreading, a worker killed mid-conversation, and workers that are down, answer 500 or hang.
Every process is started here and stopped even when a test fails. Without smg these tests skip,
except in CI (`CI=true`), where they fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference.errors import EngineUnavailable, InvalidRequest
from inference.layout import turn_messages
from inference.messages import ChatMessage, SamplingParams
from inference.openai_engine import OpenAIEngine
from inference.replicas import (
    Router,
    RouterOptions,
    WorkerPool,
    free_port,
    metric_value,
)
from tests.inference.fake_openai_server import FakeServer, stall, status

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("require_smg")]

GREEDY = SamplingParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def pool(tiny_model_path: Path) -> Iterator[WorkerPool]:
    """Two workers with the prefix cache on, shared by this module (the kill test runs last and
    kills one; later tests must not need both)."""
    with WorkerPool(tiny_model_path, 2, device="cpu", prefix_cache_tokens=50_000) as p:
        yield p


def _engine_counter(url: str, name: str) -> float:
    return metric_value(httpx.get(url + "/metrics", timeout=10).text, name)


def _persona(i: int) -> str:
    # Different from the first character on: conversations share no prefix.
    return f"{i} is your number. You are persona {i}, " + f"witty in style {i}. " * 30


async def _turn(
    engine: OpenAIEngine, persona: str, history: list[ChatMessage], question: str
) -> tuple[list[ChatMessage], int, int]:
    msgs = turn_messages(persona, history, question)
    reply = await engine.generate(msgs, GREEDY)
    return (
        [*msgs[1:], ChatMessage(role="assistant", content=reply.text)],
        reply.usage.cached_tokens,
        reply.usage.prompt_tokens,
    )


def _router(urls: list[str], **options: object) -> Router:
    return Router(urls, options=RouterOptions(**options))  # type: ignore[arg-type]


def _served_by(urls: list[str], before: dict[str, float]) -> str:
    """The one worker whose request counter moved since `before` (and update `before`)."""
    moved = []
    for u in urls:
        now = _engine_counter(u, "quipfeed_engine_requests_total")
        if now != before[u]:
            moved.append(u)
        before[u] = now
    assert len(moved) == 1, moved
    return moved[0]


async def test_every_turn_of_a_conversation_reaches_the_worker_holding_its_prefix(
    pool: WorkerPool,
) -> None:
    counts = {u: _engine_counter(u, "quipfeed_engine_requests_total") for u in pool.urls}
    router = await asyncio.to_thread(_router(pool.urls, policy="cache_aware").start)
    # The client quipfeed uses, pointed at the gateway, exactly as QUIPFEED_MODEL__URL would.
    engine = OpenAIEngine(router.url + "/v1")
    workers: dict[int, set[str]] = {c: set() for c in range(4)}
    later: list[tuple[int, int]] = []
    try:
        info = await engine.start()
        assert info.model == "tiny-moe"
        assert info.context_window == 1024  # from /get_server_info: smg's /v1/models omits it
        histories: list[list[ChatMessage]] = [[] for _ in range(4)]
        # Turn-major and one request at a time, so each request's worker is known from the
        # workers' own counters: the conversations interleave as users' do.
        for turn in range(3):
            for c in range(4):
                histories[c], hit, prompt = await _turn(
                    engine, _persona(c), histories[c], f"turn {turn}: news for {c}?"
                )
                workers[c].add(_served_by(pool.urls, counts))
                if turn > 0:
                    later.append((hit, prompt))
        metrics = router.metrics()
    finally:
        await engine.aclose()
        router.stop()
    # Each conversation stayed on one worker, and there every later turn found its prefix.
    assert all(len(w) == 1 for w in workers.values()), workers
    assert all(hit >= 0.8 * prompt for hit, prompt in later), later
    # The gateway's own Prometheus port saw the same traffic and both workers healthy.
    assert metric_value(metrics, "smg_worker_selection_total", policy="cache_aware") >= 12
    assert metric_value(metrics, "smg_cache_aware_policy_branch_total", branch="tree_match") >= 8
    for url in pool.urls:
        assert metric_value(metrics, "smg_worker_health", worker=url) == 1


async def test_a_worker_down_at_router_start_leaves_the_healthy_one_serving(
    pool: WorkerPool,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    router = _router([dead, pool.urls[0]], worker_startup_timeout_s=30)
    await asyncio.to_thread(router.start, 1)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for i in range(3):
                r = await client.post(
                    router.url + "/v1/chat/completions",
                    json={
                        "model": "tiny-moe",
                        "messages": [{"role": "user", "content": f"hi {i}"}],
                        "max_tokens": 3,
                    },
                )
                assert r.status_code == 200, r.text
        listed = {w["url"]: w["is_healthy"] for w in router.workers()}
        assert listed == {pool.urls[0]: True}
    finally:
        router.stop()


async def test_a_worker_answering_500_is_cut_off_and_requests_still_succeed(
    pool: WorkerPool,
) -> None:
    async with FakeServer(actions=[status(500, "worker broke")], model="tiny-moe") as broken:
        # round_robin: sequential requests sharing no prefix would all go to one worker under
        # cache_aware (lowest load, first listed), and this test needs the broken one tried.
        router = _router([broken.url, pool.urls[0]], policy="round_robin")
        await asyncio.to_thread(router.start)
        try:
            engine = OpenAIEngine(router.url, model="tiny-moe", retries=0)
            try:
                for i in range(4):
                    reply = await engine.generate(
                        [ChatMessage(role="user", content=f"question {i}")], GREEDY
                    )
                    assert reply.choices[0].finish_reason in {"stop", "length"}
            finally:
                await engine.aclose()
            metrics = router.metrics()
        finally:
            router.stop()
    # The router retried past it and opened that worker's circuit breaker.
    assert metric_value(metrics, "smg_worker_retries_total") >= 1
    assert metric_value(metrics, "smg_worker_cb_state", worker=broken.url) == 1
    assert 1 <= len(broken.requests) <= RouterOptions().cb_failure_threshold


async def test_a_hanging_worker_is_timed_out_and_the_router_keeps_serving(
    pool: WorkerPool,
) -> None:
    async with FakeServer(actions=[stall()], model="tiny-moe") as hung:
        router = _router([hung.url, pool.urls[0]], policy="round_robin", request_timeout_s=2)
        await asyncio.to_thread(router.start)
        try:
            engine = OpenAIEngine(router.url, model="tiny-moe", retries=0)
            try:
                started = time.monotonic()
                for i in range(4):
                    reply = await engine.generate(
                        [ChatMessage(role="user", content=f"q{i}")], GREEDY
                    )
                    assert reply.usage.completion_tokens > 0
                elapsed = time.monotonic() - started
            finally:
                await engine.aclose()
            metrics = router.metrics()
        finally:
            router.stop()
    # Each try at the hung worker is cut at the router's timeout and retried on the healthy one;
    # after `cb_failure_threshold` such tries its breaker keeps it out.
    assert 1 <= len(hung.requests) <= RouterOptions().cb_failure_threshold
    assert elapsed < 2 * RouterOptions().cb_failure_threshold + 10, elapsed
    assert metric_value(metrics, "smg_worker_retries_total") >= 1
    assert metric_value(metrics, "smg_worker_cb_state", worker=hung.url) == 1


async def test_only_a_hanging_worker_left_gives_the_caller_a_clear_error_in_bounded_time() -> None:
    async with FakeServer(actions=[stall()], model="tiny-moe") as hung:
        router = _router([hung.url], request_timeout_s=1, retries=1)
        await asyncio.to_thread(router.start)
        engine = OpenAIEngine(router.url, model="tiny-moe", retries=0)
        try:
            started = time.monotonic()
            with pytest.raises(EngineUnavailable, match="504"):  # smg: gateway timeout
                await engine.generate([ChatMessage(role="user", content="anyone?")], GREEDY)
            assert time.monotonic() - started < 10
        finally:
            await engine.aclose()
            router.stop()


async def test_a_prompt_larger_than_the_window_is_a_400_and_breaks_nothing(
    pool: WorkerPool,
) -> None:
    router = await asyncio.to_thread(_router(pool.urls).start)
    engine = OpenAIEngine(router.url, model="tiny-moe", retries=0)
    try:
        huge = "storm " * 5000  # the question alone is longer than the 1024-token window
        with pytest.raises(InvalidRequest, match=r"window|too long|fit"):
            await engine.generate([ChatMessage(role="user", content=huge)], GREEDY)
        reply = await engine.generate([ChatMessage(role="user", content="and now?")], GREEDY)
        assert reply.usage.completion_tokens > 0
        metrics = router.metrics()
    finally:
        await engine.aclose()
        router.stop()
    # A client error is not a worker failure: no retry, no breaker opened.
    assert metric_value(metrics, "smg_worker_retries_total") == 0
    for url in pool.urls:
        assert metric_value(metrics, "smg_worker_cb_state", worker=url) == 0


async def test_worker_killed_mid_conversation_next_turn_is_answered_and_metrics_say_so(
    pool: WorkerPool,
) -> None:
    """Runs last in this module: it kills one of the shared workers."""
    router = await asyncio.to_thread(_router(pool.urls).start)
    engine = OpenAIEngine(router.url, model="tiny-moe")
    try:
        persona = _persona(7)
        history: list[ChatMessage] = []
        counts = [_engine_counter(u, "quipfeed_engine_requests_total") for u in pool.urls]
        for turn in range(2):
            history, _, _ = await _turn(engine, persona, history, f"turn {turn}?")
        grew = [
            _engine_counter(u, "quipfeed_engine_requests_total") - n
            for u, n in zip(pool.urls, counts, strict=True)
        ]
        holder = grew.index(2)  # both turns went to one worker
        pool.kill(holder)
        history, cached, prompt = await _turn(engine, persona, history, "after the crash?")
        assert prompt > 0 and cached < prompt  # answered by the other worker, prefix recomputed
        history, cached, prompt = await _turn(engine, persona, history, "and next?")
        assert cached >= 0.8 * prompt  # which now holds the conversation
        metrics = router.metrics()
    finally:
        await engine.aclose()
        router.stop()
    dead = pool.urls[holder]
    assert metric_value(metrics, "smg_worker_retries_total") >= 1
    assert metric_value(metrics, "smg_worker_cb_transitions_total", worker=dead, to="open") >= 1
    assert (
        metric_value(metrics, "smg_worker_cb_outcomes_total", worker=dead, outcome="failure") >= 1
    )


async def test_a_gateway_with_no_healthy_worker_is_a_clear_engine_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    router = await asyncio.to_thread(
        _router([dead], worker_startup_timeout_s=30).start,
        0,  # nothing registers
    )
    engine = OpenAIEngine(router.url, model="tiny-moe", retries=0)
    try:
        with pytest.raises(EngineUnavailable, match="no healthy worker") as probed:
            await engine.start()
        with pytest.raises(EngineUnavailable, match="no healthy worker") as asked:
            await engine.generate([ChatMessage(role="user", content="anyone?")], GREEDY)
    finally:
        await engine.aclose()
        router.stop()
    for error in (probed.value, asked.value):
        assert router.url in str(error) and "\n" not in str(error)
        assert "start its workers" in str(error)


def test_cli_against_a_gateway_with_no_worker_or_none_at_all_prints_one_line_and_fails(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    dead = f"http://127.0.0.1:{free_port()}"
    router = _router([dead], worker_startup_timeout_s=30).start(0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QUIPFEED_DATA_DIR": str(tmp_path)}
    try:
        outcomes = []
        for url, expected in ((router.url, "no healthy worker"), (dead, "cannot reach")):
            done = subprocess.run(
                [sys.executable, "-m", "quipfeed.cli", "ask", "what now?", "--model-url", url],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                stdin=subprocess.DEVNULL,
            )
            outcomes.append((done.returncode, done.stderr.strip(), expected))
    finally:
        router.stop()
    for code, err, expected in outcomes:
        assert code != 0, err
        assert "Traceback" not in err, err
        assert len(err.splitlines()) == 1 and expected in err, err
