"""`quipfeed ask`, `quipfeed chat` and `quipfeed eval chat` through typer, on the embedded
defaults (Qdrant Edge in the data dir, a real Redis) and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from quipfeed.cli_bot import register


@pytest.fixture
def app() -> typer.Typer:
    app, eval_app = typer.Typer(), typer.Typer()
    app.add_typer(eval_app, name="eval")
    register(app, eval_app)
    return app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_redis_url: str) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray ./quipfeed.toml
    for name in ("QUIPFEED_MODEL__URL", "QUIPFEED_MODEL__PATH", "QUIPFEED_QDRANT__URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUIPFEED_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUIPFEED_REDIS__URL", shared_redis_url)
    return tmp_path / "data"


@pytest.fixture
def indexed(env: Path, minilm, posts, post_vectors, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    """The data dir's Qdrant Edge shard holding the posts; the CLI gets the session's embedder
    (the same model it would load, without loading it again per command)."""
    from retrieval.edge_store import EdgeStore

    with EdgeStore(env / "qdrant" / "posts", minilm.dim) as store:
        store.upsert(posts, post_vectors)
    monkeypatch.setattr("quipfeed.runtime.embedder_for", lambda settings: minilm)
    return env


def test_ask_without_a_model_says_what_to_set(app: typer.Typer, env: Path):
    result = CliRunner().invoke(app, ["ask", "what is new?"])
    assert result.exit_code == 2
    assert "QUIPFEED_MODEL__URL" in result.output and "QUIPFEED_MODEL__PATH" in result.output
    assert "Traceback" not in result.output


def test_ask_streams_json_and_a_follow_up_continues_the_conversation(
    app: typer.Typer, indexed: Path, tiny_bot_model: Path
):
    runner = CliRunner()
    base = ["--model-path", str(tiny_bot_model), "--now", "2024-05-03T00:00:00Z", "--json"]
    base += ["--max-tokens", "16"]
    first = runner.invoke(app, ["ask", "What are people saying about Tesla?", *base])
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["searched"] and data["conversation_id"]
    second = runner.invoke(
        app, ["ask", "and what about Bluesky?", "-c", data["conversation_id"], *base]
    )
    assert second.exit_code == 0, second.output
    follow = json.loads(second.output)
    assert follow["conversation_id"] == data["conversation_id"]
    assert "tesla" in follow["query"] and "bluesky" in follow["query"]


def test_ask_with_an_unknown_persona_fails_cleanly(
    app: typer.Typer, indexed: Path, tiny_bot_model: Path
):
    result = CliRunner().invoke(
        app, ["ask", "hi", "--persona", "nobody", "--model-path", str(tiny_bot_model)]
    )
    assert result.exit_code == 2 and "no persona 'nobody'" in result.output
    assert "Traceback" not in result.output


def test_chat_regenerates_switches_versions_and_exports(
    app: typer.Typer, indexed: Path, tiny_bot_model: Path
):
    script = (
        "\n".join(
            [
                "What are people saying about Tesla?",
                "/regen",
                "/versions",
                "/prev",
                "/up nice",
                "/rename Tesla talk",
                "/export md",
                "/quit",
            ]
        )
        + "\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "chat",
            "--model-path",
            str(tiny_bot_model),
            "--now",
            "2024-05-03T00:00:00Z",
            "--max-tokens",
            "16",
        ],
        input=script,
    )
    assert result.exit_code == 0, result.output
    assert "* 2/2" in result.output  # after /regen the new version is selected
    assert "* 1/2" in result.output  # /prev went back to the first
    assert "# Tesla talk" in result.output and "(one of 2 versions)" in result.output


def test_eval_chat_runs_the_plumbing_on_the_tiny_model(
    app: typer.Typer, indexed: Path, tmp_path: Path
):
    from tests.conftest import BLUESKY_200

    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"query": "Tesla going full Enron", "now": "2024-05-03T00:00:00Z"}) + "\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "chat",
            "--tiny",
            "--posts",
            str(BLUESKY_200),
            "--max-posts",
            "40",
            "--questions",
            str(questions),
            "--max-tokens",
            "16",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (
        report["questions"] == 1 + 1 + 2
    )  # the feed question, it again before the feed, small talk
    assert report["refusal_when_empty"] == 1.0
    assert {row["kind"] for row in report["rows"]} == {"feed", "empty", "small-talk"}
    assert report["rows"][0]["retrieved"] > 0


async def test_remote_search_speaks_the_daemons_search_api(feed):
    from ingest.http_api import build_app
    from quipfeed.remote_search import RemoteSearch
    from tests.bot.conftest import AS_OF

    app = build_app(None, feed.searcher)  # type: ignore[arg-type]  # /search needs no daemon
    remote = RemoteSearch("http://daemon", transport=httpx.ASGITransport(app=app))
    try:
        hits = await remote.search("Tesla", k=3, since=None, as_of=AS_OF)
        local = await feed.search("Tesla", k=3, since=None, as_of=AS_OF)
        assert [h.post.id for h in hits] == [h.post.id for h in local]
        assert await remote.search("  ", k=3, since=None, as_of=AS_OF) == []
    finally:
        await remote.aclose()


async def test_remote_search_carries_the_turns_request_id_to_the_daemon(feed, caplog):
    """The daemon hop logs its search under the id of the turn that asked (as in `runtime`)."""
    import logging

    from inference import request_id
    from ingest.http_api import build_app
    from quipfeed.remote_search import RemoteSearch
    from tests.bot.conftest import AS_OF

    request_id.install_log_records()
    app = build_app(None, feed.searcher)  # type: ignore[arg-type]  # /search needs no daemon
    app.add_middleware(request_id.RequestIdMiddleware)
    remote = RemoteSearch("http://daemon", transport=httpx.ASGITransport(app=app))
    caplog.set_level(logging.INFO, logger="retrieval.search")
    try:
        with request_id.bind("turn-42"):
            await remote.search("Tesla", k=3, since=None, as_of=AS_OF)
    finally:
        await remote.aclose()
    searches = [r for r in caplog.records if r.name == "retrieval.search"]
    assert searches and all(getattr(r, "request_id", None) == "turn-42" for r in searches)
