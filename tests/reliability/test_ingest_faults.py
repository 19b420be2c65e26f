"""kill -9 of the embedded redis-server mid-stream, and of the daemon with a batch in flight:
after what died is restarted, every post of the source is indexed exactly once.

Real processes throughout: `quipfeed ingest` in a subprocess, the embedded redis-server (its
pid from DATA_DIR/redis/redis.pid), a Qdrant Edge shard on disk, the real embedding model.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from quipfeed.embedded_redis import EmbeddedRedis
from tests.reliability.daemon_process import (
    env_for,
    final_stats,
    free_port,
    replay_file,
    run_cli,
    start_daemon,
    stop,
    wait_for,
)

pytestmark = pytest.mark.slow


def finish_with_once(feed: Path, env: dict[str, str]) -> None:
    restart = run_cli(env, "ingest", "--source", f"jsonl:{feed}", "--once", "--port", "0", "--json")
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert "Traceback" not in restart.stderr


def test_kill_9_of_redis_mid_stream_then_restart_indexes_every_post_once(tmp_path: Path) -> None:
    feed, ids = replay_file(tmp_path)
    data_dir = tmp_path / "data"
    env = env_for(data_dir)
    port = free_port()
    embedded = EmbeddedRedis(data_dir / "redis")
    daemon = start_daemon(feed, env, port, "--speed", "40")
    try:
        before = wait_for(daemon, port, lambda s: s["posts"] >= 30)
        assert before["posts"] < len(ids), "the kill must land mid-stream"
        redis_pid = int((data_dir / "redis" / "redis.pid").read_text())
        os.kill(redis_pid, signal.SIGKILL)
        time.sleep(1.5)  # the daemon meets a dead bus for a while
        assert not embedded.alive()
        embedded.ensure_running()  # what a supervisor would do: restart what died
        # Either the daemon rides out the outage and finishes the stream itself, or it exits;
        # it must never sit alive but wedged.
        deadline = time.monotonic() + 90
        recovered = False
        while time.monotonic() < deadline and daemon.poll() is None:
            try:
                stats = wait_for(daemon, port, lambda s: s["posts"] == len(ids), timeout=2)
                recovered = stats["bus_lag"] == 0
                if recovered:
                    break
            except AssertionError:
                continue
        assert recovered or daemon.poll() is not None, (
            "daemon alive but not indexing after Redis came back"
        )
        if recovered:
            print("\nafter the Redis kill the daemon recovered and finished the stream itself")
        else:
            tail = daemon.stderr.read().decode()[-600:] if daemon.stderr else ""
            print(f"\nafter the Redis kill the daemon exited {daemon.returncode}: {tail}")
        stop(daemon)
        finish_with_once(feed, env)
        stats = final_stats(env)
        assert stats["posts"] == len(ids)
        assert stats["bus_lag"] == 0
        assert stats["dead_letters"] == 0
        # Events and cursor reach Redis in one MULTI/EXEC: no line was published twice.
        assert stats["published"] == len(ids)
        assert stats["events_by_source"][f"jsonl:{feed}"] == len(ids)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        embedded.stop()


def test_kill_9_of_daemon_with_a_batch_in_flight_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    feed, ids = replay_file(tmp_path)
    data_dir = tmp_path / "data"
    # One batch holds the whole feed; the deadline lets it fill before the indexer starts.
    env = env_for(
        data_dir,
        QUIPFEED_INGEST__BATCH_SIZE="512",
        QUIPFEED_INGEST__BATCH_DEADLINE_MS="1500",
    )
    port = free_port()
    embedded = EmbeddedRedis(data_dir / "redis")
    daemon = start_daemon(feed, env, port, "--speed", "0")
    try:
        wait_for(daemon, port, lambda s: s["published"] == len(ids))
        client = redis.Redis.from_url(embedded.url)
        in_flight = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = client.xpending("quipfeed:posts", "indexers")
            in_flight = int(pending["pending"]) if pending else 0
            if in_flight:
                break
            time.sleep(0.01)
        assert in_flight > 0, "no batch was ever delivered to an indexer"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        # The kill landed while the batch was delivered but not acknowledged.
        left_pending = int(client.xpending("quipfeed:posts", "indexers")["pending"])
        client.close()
        assert left_pending > 0
        finish_with_once(feed, env)
        stats = final_stats(env)
        assert stats["posts"] == len(ids)
        assert stats["bus_lag"] == 0
        assert stats["published"] == len(ids)
        assert stats["dead_letters"] == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        embedded.stop()
