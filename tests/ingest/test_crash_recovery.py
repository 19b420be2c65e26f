"""kill -9 of the ingest daemon mid-stream, then a restart: nothing lost, nothing twice.

Real processes throughout: the daemon is `quipfeed ingest` in a subprocess, Redis is the
embedded redis-server, the store is a Qdrant Edge shard on disk.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from quipfeed.embedded_redis import EmbeddedRedis
from tests.conftest import BLUESKY_200

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def replay_file(tmp_path: Path) -> tuple[Path, set[str]]:
    """The 200 real posts, one second apart, so a replay at --speed 40 takes about 5 s."""
    start = datetime(2024, 5, 1, tzinfo=UTC)
    path = tmp_path / "feed.jsonl"
    ids = set()
    with path.open("w") as f:
        for i, line in enumerate(BLUESKY_200.read_text().splitlines()):
            post = json.loads(line)
            post["created_at"] = (start + timedelta(seconds=i)).isoformat()
            ids.add(post["id"])
            f.write(json.dumps(post) + "\n")
    return path, ids


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    feed, ids = replay_file(tmp_path)
    data_dir = tmp_path / "data"
    env = {**os.environ, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    port = free_port()
    cli = [sys.executable, "-m", "quipfeed.cli", "ingest", "--source", f"jsonl:{feed}"]
    daemon = subprocess.Popen(
        [*cli, "--speed", "40", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        indexed_before_kill = 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert daemon.poll() is None, (
                daemon.stderr.read().decode()[-3000:] if daemon.stderr else ""
            )
            try:
                indexed_before_kill = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()[
                    "posts"
                ]
            except httpx.HTTPError:
                indexed_before_kill = 0
            if indexed_before_kill >= 30:
                break
            time.sleep(0.1)
        assert 30 <= indexed_before_kill < len(ids), "the kill must land mid-stream"
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert health["status"] == "ok"
        # On a loaded machine the source may already have put every line on the bus.
        assert health["sources"][f"jsonl:{feed}"]["state"] in {"running", "done"}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "quipfeed_posts_indexed_total" in metrics
        assert "quipfeed_freshness_seconds_bucket" in metrics
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)

        restart = subprocess.run(
            [*cli, "--once", "--port", "0", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert restart.returncode == 0, restart.stderr[-3000:]
        stats = json.loads(
            subprocess.run(
                [sys.executable, "-m", "quipfeed.cli", "stats", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
        )
        assert stats["posts"] == len(ids)
        assert stats["bus_lag"] == 0
        assert stats["dead_letters"] == 0
        # Each line of the file reached the bus exactly once across both lives of the daemon.
        assert stats["events_by_source"][f"jsonl:{feed}"] == len(ids)
        assert stats["published"] == len(ids)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        EmbeddedRedis(data_dir / "redis").stop()
