"""The `quipfeed` command end to end, as a user runs it: real processes, embedded Redis and
Qdrant Edge under a data dir of the test's own, the real embedding model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quipfeed.embedded_redis import EmbeddedRedis
from tests.conftest import BLUESKY_200

pytestmark = pytest.mark.slow


def quipfeed(data_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "quipfeed.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir holding the 200 real fixture posts plus a file of bad lines, ingested once."""
    data_dir = tmp_path_factory.mktemp("data")
    bad = data_dir / "bad.jsonl"
    ok = {
        "id": "ok:1",
        "text": "a perfectly fine post about the harbour",
        "created_at": "2024-05-02T10:00:00Z",
    }
    with bad.open("wb") as f:
        f.write(b'{"id": "broken", "text": \n')  # malformed JSON
        f.write(
            json.dumps({"id": "no-text", "created_at": "2024-05-02T10:00:00Z"}).encode() + b"\n"
        )
        f.write(json.dumps({**ok, "id": "huge", "text": "x" * 1_000_000}).encode() + b"\n")
        f.write(
            json.dumps({**ok, "id": "old", "created_at": "1970-01-01T00:00:00Z"}).encode() + b"\n"
        )
        f.write(
            json.dumps({**ok, "id": "future", "created_at": "2099-01-01T00:00:00Z"}).encode()
            + b"\n"
        )
        f.write(json.dumps({**ok, "id": "odd", "op": "explode"}).encode() + b"\n")
        f.write(b'{"id": "latin1", "text": "caf\xe9", "created_at": "2024-05-02T10:00:00Z"}\n')
        f.write(json.dumps(ok).encode() + b"\n")
    result = quipfeed(
        data_dir,
        "ingest",
        "--once",
        "--port",
        "0",
        "--json",
        "--source",
        f"jsonl:{BLUESKY_200}",
        "--source",
        f"jsonl:{bad}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield data_dir
    EmbeddedRedis(data_dir / "redis").stop()


def test_ingest_once_indexes_every_good_post_and_reports_it(ingested: Path) -> None:
    stats = json.loads(quipfeed(ingested, "stats", "--json").stdout)
    assert stats["posts"] == 201  # 200 fixture posts + the one good line of the bad file
    assert stats["bus_lag"] == 0
    assert stats["oldest"].startswith("2024-05-01")
    assert sum(stats["by_source"].values()) == 201


def test_bad_input_goes_to_dead_letters_with_its_reason(ingested: Path) -> None:
    result = quipfeed(ingested, "ingest", "dead-letters", "--json")
    assert result.returncode == 0, result.stderr
    reasons = sorted(d["reason"] for d in json.loads(result.stdout))
    assert len(reasons) == 7
    stats = json.loads(quipfeed(ingested, "stats", "--json").stdout)
    assert stats["dead_letters"] == 7
    human = quipfeed(ingested, "ingest", "dead-letters").stdout
    assert "jsonl:" in human


def test_search_answers_from_what_was_ingested(ingested: Path) -> None:
    target = json.loads(BLUESKY_200.read_text().splitlines()[17])
    result = quipfeed(ingested, "search", target["text"][:120], "--json", "--k", "5")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert target["id"] in [h["id"] for h in hits]
    human = quipfeed(ingested, "search", target["text"][:120], "--k", "3").stdout
    assert "[1]" in human


def test_search_as_of_a_moment_hides_posts_not_yet_written(ingested: Path) -> None:
    lines = [json.loads(x) for x in BLUESKY_200.read_text().splitlines()]
    late = max(lines, key=lambda d: d["created_at"])
    before = "2024-05-01T00:00:00Z"
    hits = json.loads(
        quipfeed(ingested, "search", late["text"][:120], "--json", "--now", before).stdout
    )
    assert late["id"] not in [h["id"] for h in hits]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "harbour", "--since", "900y"], "too large"),
        (["search", "harbour", "--now", "yesterday-ish"], "not a timestamp"),
        (["search", ""], "empty"),
        (["ingest", "--source", "gopher://nowhere"], "gopher"),
        (["ingest", "--once", "--source", "jetstream:ws://127.0.0.1:9/subscribe"], "--once"),
    ],
)
def test_bad_arguments_get_a_clear_error_not_a_traceback(
    ingested: Path, args: list[str], message: str
) -> None:
    result = quipfeed(ingested, *args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_reads_like_a_menu() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quipfeed.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("ingest", "stats", "search", "eval", "bench"):
        assert command in result.stdout
