"""The everyday commands load only what they use: `--help`, `stats`, `trending` and dead
letters load no model (nor torch), `search` checks its input before loading anything and
embeds a query without torch. Each runs as a real process; the test reads which modules it
imported when it exited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BLUESKY_200

# Runs quipfeed's CLI with ARGS and writes the names of every module it imported to OUT at exit.
_RUN = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["quipfeed", *sys.argv[2:]]
from quipfeed.cli import app
app()
"""
MODEL_LIBRARIES = ("torch", "transformers", "sentence_transformers")


def run_cli(
    data_dir: Path, tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIPFEED_")}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(out), *args],
        env={**env, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return done, set(json.loads(out.read_text()))


def loaded(modules: set[str], *roots: str) -> list[str]:
    return sorted(r for r in roots if r in modules)


def test_help_imports_no_model_web_or_settings_library(tmp_path: Path) -> None:
    done, modules = run_cli(tmp_path / "data", tmp_path, "--help")
    assert done.returncode == 0 and "stats" in done.stdout
    assert loaded(modules, *MODEL_LIBRARIES, "fastapi", "uvicorn", "redis", "pydantic") == []


@pytest.mark.parametrize(
    "args", [["stats", "--json"], ["trending", "--json"], ["ingest", "dead-letters", "--json"]]
)
def test_read_only_commands_on_an_empty_data_dir_load_no_model(
    tmp_path: Path, args: list[str]
) -> None:
    data_dir = tmp_path / "data"
    done, modules = run_cli(data_dir, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert loaded(modules, *MODEL_LIBRARIES) == []
    if args[0] == "stats":
        assert json.loads(done.stdout)["posts"] == 0
    # Reading created no store, and the embedded Redis it started is gone again.
    assert not (data_dir / "qdrant").exists()
    assert not (data_dir / "redis" / "redis.pid").exists()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, minilm) -> Path:  # type: ignore[no-untyped-def]
    """A data dir whose shard holds the 200 fixture posts, embedded by sentence-transformers
    (the commands below only read it)."""
    from quipfeed.runtime import open_store
    from quipfeed.settings import Settings
    from retrieval.post import Post

    data_dir = tmp_path_factory.mktemp("indexed") / "data"
    posts = [Post.model_validate_json(x) for x in BLUESKY_200.read_text().splitlines()]
    store = open_store(Settings(data_dir=data_dir), minilm.dim)
    try:
        store.upsert(posts, minilm.embed([p.text for p in posts]))
    finally:
        store.close()
    return data_dir


def test_stats_of_a_filled_store_opens_it_at_its_own_width_without_a_model(
    indexed: Path, tmp_path: Path
) -> None:
    done, modules = run_cli(indexed, tmp_path, "stats", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["posts"] == 200
    assert loaded(modules, *MODEL_LIBRARIES) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", ""], "the query is empty"),
        (["search", "harbour", "--now", "not-a-time"], "not a timestamp"),
        (["search", "harbour", "--since", "0s"], "time span must be positive"),
    ],
)
def test_search_refuses_bad_input_before_loading_anything(
    indexed: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    done, modules = run_cli(indexed, tmp_path, *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # Neither the model nor Redis: it failed before either was reached.
    assert loaded(modules, *MODEL_LIBRARIES, "redis") == []


def test_search_embeds_the_query_without_torch_and_finds_the_post(
    indexed: Path, tmp_path: Path
) -> None:
    target = json.loads(BLUESKY_200.read_text().splitlines()[17])
    done, modules = run_cli(indexed, tmp_path, "search", target["text"][:120], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["id"] == target["id"]
    assert loaded(modules, *MODEL_LIBRARIES) == []


def test_search_of_an_empty_data_dir_says_nothing_is_indexed(tmp_path: Path) -> None:
    done, modules = run_cli(tmp_path / "data", tmp_path, "search", "harbour")
    assert done.returncode == 0, done.stderr
    assert "nothing is indexed yet" in done.stdout
    assert loaded(modules, *MODEL_LIBRARIES) == []
    assert not (tmp_path / "data" / "qdrant").exists()
