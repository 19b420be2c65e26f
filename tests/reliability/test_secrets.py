"""Secrets in the environment (model API key, Qdrant API key, Discord token) never show up in
what quipfeed writes: stdout, stderr and logs at DEBUG, error messages, the prompts sent to the
model, the stored (exportable) conversations, or any file under the data dir."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quipfeed.embedded_redis import EmbeddedRedis
from tests.inference.fake_openai_server import FakeServer, reply_events, stream
from tests.reliability.daemon_process import env_for, free_port, replay_file, run_cli

pytestmark = pytest.mark.slow

SECRETS = {
    "QUIPFEED_MODEL__API_KEY": "sk-fake-model-key-7f3a9c1e5b",
    "QUIPFEED_QDRANT__API_KEY": "qdrant-fake-key-2d8e4b6a0c",
    "QUIPFEED_DISCORD__TOKEN": "MTfake.discord.token-9b1d3f5e7a",
}


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, value in SECRETS.items() if value.encode() in data]


@pytest.fixture
def fake_model() -> Iterator[FakeServer]:
    loop = asyncio.new_event_loop()
    fake = FakeServer([stream(reply_events("Storms, says the feed [1]."))])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_secrets_in_the_environment_never_reach_output_prompts_or_stored_data(
    tmp_path: Path, fake_model: FakeServer
) -> None:
    feed, _ = replay_file(tmp_path)
    data_dir = tmp_path / "data"
    env = env_for(data_dir, QUIPFEED_LOG_LEVEL="DEBUG", **SECRETS)
    try:
        runs = {
            "ingest": run_cli(env, "ingest", "--source", f"jsonl:{feed}", "--once", "--port", "0"),
            "ask": run_cli(
                env,
                "ask",
                "what is the storm doing?",
                "--model-url",
                fake_model.url,
                "--now",
                "2024-05-01T04:00:00Z",
                "--json",
            ),
            "ask, model down": run_cli(
                env, "ask", "storm?", "--model-url", f"http://127.0.0.1:{free_port()}"
            ),
            "search, qdrant down": run_cli(
                {**env, "QUIPFEED_QDRANT__URL": f"http://127.0.0.1:{free_port()}"},
                "search",
                "storm",
            ),
        }
        assert runs["ingest"].returncode == 0, runs["ingest"].stderr[-2000:]
        assert runs["ask"].returncode == 0, runs["ask"].stderr[-2000:]
        assert runs["ask, model down"].returncode != 0
        assert runs["search, qdrant down"].returncode != 0
        for name, done in runs.items():
            assert leaks(done.stdout + done.stderr) == [], name

        # The prompts the model was sent (the key belongs in the Authorization header only).
        assert fake_model.requests, "ask never reached the model"
        assert leaks(json.dumps(fake_model.requests)) == []

        # The stored conversation (what an export reads) and everything else in Redis.
        # Each command stopped the Redis it started; this one reloads what they saved.
        client = redis.Redis.from_url(EmbeddedRedis(data_dir / "redis").ensure_running())
        cid = json.loads(runs["ask"].stdout)["conversation_id"]
        stored = [k for k in client.scan_iter() if cid.encode() in k]
        assert stored, "the conversation was not stored"
        for key in client.scan_iter():
            kind = client.type(key)
            value = client.dump(key) or b""
            assert leaks(value) == [], (key, kind)
        client.close()
        # Every file under the data dir: Redis AOF and log, the shard, daemon.json.
        for path in data_dir.rglob("*"):
            if path.is_file() and not path.is_socket():
                assert leaks(path.read_bytes()) == [], path
    finally:
        EmbeddedRedis(data_dir / "redis").stop()
