"""A source that sends garbage and replays old events, through the real daemon: each bad line is
dead-lettered with its reason, and no post is indexed twice, whether a line repeats inside the
file or the whole feed is replayed again under another name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quipfeed.embedded_redis import EmbeddedRedis
from tests.reliability.daemon_process import env_for, final_stats, replay_file, run_cli

pytestmark = pytest.mark.slow

JUNK = [
    "{not json at all",
    "[1, 2, 3]",
    json.dumps({"text": "no id", "created_at": "2024-05-01T00:00:00Z"}),
    json.dumps({"id": "x:no-text", "created_at": "2024-05-01T00:00:00Z"}),
    json.dumps({"id": "x:1970", "text": "from the past", "created_at": "1970-01-01T00:00:00Z"}),
    json.dumps({"id": "x:2099", "text": "from the future", "created_at": "2099-01-01T00:00:00Z"}),
    json.dumps({"id": "x:huge", "text": "a" * 1_000_000, "created_at": "2024-05-01T00:00:00Z"}),
    json.dumps({"id": "x:baddate", "text": "hello", "created_at": "yesterday-ish"}),
]


def test_garbage_is_dead_lettered_and_replays_are_never_indexed_twice(tmp_path: Path) -> None:
    feed, ids = replay_file(tmp_path)
    lines = feed.read_text().splitlines()
    # Every 10th line comes back later (a replaying source), then junk, then raw bad UTF-8.
    hostile = lines[:100] + JUNK[:4] + lines[100:] + lines[::10] + JUNK[4:]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(("\n".join(hostile) + "\n").encode() + b'{"id": "\xff\xfe", "text": "\xc3"}\n')
    data_dir = tmp_path / "data"
    env = env_for(data_dir)
    try:
        first = run_cli(env, "ingest", "--source", f"jsonl:{path}", "--once", "--port", "0")
        assert first.returncode == 0, first.stderr[-3000:]
        assert "Traceback" not in first.stderr
        # The same feed again under another name: a replay of old events from a "new" source.
        copy = tmp_path / "replayed.jsonl"
        copy.write_bytes(path.read_bytes())
        again = run_cli(env, "ingest", "--source", f"jsonl:{copy}", "--once", "--port", "0")
        assert again.returncode == 0, again.stderr[-3000:]

        stats = final_stats(env)
        assert stats["posts"] == len(ids)
        assert stats["bus_lag"] == 0
        bad_lines = len(JUNK) + 1
        assert stats["dead_letters"] == 2 * bad_lines, stats["dead_letters_by_reason"]
        letters = json.loads(
            run_cli(env, "ingest", "dead-letters", "--limit", "100", "--json").stdout
        )
        assert len(letters) == 2 * bad_lines
        assert all(letter["reason"] for letter in letters)
    finally:
        EmbeddedRedis(data_dir / "redis").stop()
