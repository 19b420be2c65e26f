"""The embedded Qdrant Edge shard held by another process: `quipfeed ingest`, `search` and
`stats` each say the store is busy, in one clear line, with no traceback; `ask` still answers,
without the feed, and says so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.chat import FEED_UNAVAILABLE
from tests.inference.fake_openai_server import FakeServer, reply_events, stream
from tests.reliability.daemon_process import env_for, replay_file, run_cli
from tests.shard_holder import ShardHolder

pytestmark = pytest.mark.slow


@pytest.fixture
def locked_data_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    with ShardHolder(data_dir / "qdrant" / "posts"):
        yield data_dir


def assert_clear_busy_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "in use by another process" in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().startswith("error:")


def test_ingest_with_the_shard_held_elsewhere_says_it_is_in_use(
    locked_data_dir: Path, tmp_path: Path
) -> None:
    feed, _ = replay_file(tmp_path)
    done = run_cli(
        env_for(locked_data_dir), "ingest", "--source", f"jsonl:{feed}", "--once", "--port", "0"
    )
    assert_clear_busy_error(done)


@pytest.mark.parametrize("command", [["search", "storm"], ["stats"]], ids=["search", "stats"])
def test_reading_commands_with_the_shard_held_elsewhere_say_it_is_in_use(
    locked_data_dir: Path, command: list[str]
) -> None:
    assert_clear_busy_error(run_cli(env_for(locked_data_dir), *command))


@pytest.fixture
def model_url() -> Iterator[str]:
    """A scripted OpenAI-compatible server (healthy, one reply) on its own loop in a thread:
    `ask` opens the model before the store, so the model must be up to reach the store."""
    loop = asyncio.new_event_loop()
    fake = FakeServer([stream(reply_events("fine"))])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(10)
    try:
        yield fake.url
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_ask_with_the_shard_held_elsewhere_answers_without_the_feed_and_says_so(
    locked_data_dir: Path, model_url: str
) -> None:
    done = run_cli(
        env_for(locked_data_dir),
        "ask",
        "what about the storm?",
        "--model-url",
        model_url,
        "--json",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"note: {FEED_UNAVAILABLE}" in done.stderr
    result = json.loads(done.stdout)
    assert result["text"] == "fine"
    assert result["sources"] == [] and result["notice"] == FEED_UNAVAILABLE
