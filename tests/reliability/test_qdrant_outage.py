"""The Qdrant server killed with -9 mid-stream and kept down for a while as posts keep
arriving: the daemon stays up, /healthz says the store is down, the indexer backs off rather
than spins, nothing is dead-lettered, and once the server is back on the same port and data
every post is indexed exactly once.

Real processes throughout: `quipfeed ingest` with the server backend (`QUIPFEED_QDRANT__URL`),
its embedded redis-server, the real embedding model. The Qdrant server is the fake in
tests/fakes/qdrant_server.py (its REST API over qdrant-client's local mode on disk), since no
Qdrant server can run here.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.indexer import MAX_BACKOFF_S, IndexerConfig
from quipfeed.embedded_redis import EmbeddedRedis
from retrieval.server_store import ServerStore
from tests.fakes.qdrant_server import FakeQdrant
from tests.reliability.daemon_process import CLI, env_for, free_port, replay_file, stop, wait_for

pytestmark = pytest.mark.slow

RETRY_LOG = "store write failed; will retry"


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    return response.status_code, response.json()


def store_up(port: int) -> float | None:
    """`quipfeed_store_up` from the daemon's /metrics (which must answer, store or not)."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "quipfeed_store_up":
                return sample.value
    return None


def store_retries(log: Path) -> list[dict[str, Any]]:
    """The indexer's "will retry" records in the daemon's JSON-lines stderr so far."""
    records = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("msg") == RETRY_LOG:
            records.append(record)
    return records


def most_attempts(outage_s: float) -> int:
    """Store attempts one indexer may make in `outage_s` when it backs off as it should
    (delays doubling from `retry_delay_s` up to MAX_BACKOFF_S), with a little slack."""
    first = IndexerConfig(consumer="-").retry_delay_s
    doubling = math.ceil(math.log2(min(outage_s, MAX_BACKOFF_S) / first + 1))
    return doubling + math.ceil(outage_s / MAX_BACKOFF_S) + 2


@pytest.mark.parametrize("outage_s", [30.0])
def test_qdrant_down_for_a_while_then_back_indexes_every_post_once(
    tmp_path: Path, outage_s: float
) -> None:
    started = time.monotonic()
    feed, ids = replay_file(tmp_path)
    qdrant = FakeQdrant(tmp_path / "qdrant", free_port())
    qdrant.start()
    data_dir = tmp_path / "data"
    embedded = EmbeddedRedis(data_dir / "redis")  # the daemon starts it; stopped here at the end
    port = free_port()
    log = tmp_path / "daemon.log"
    # Spread the feed over the outage and ~20 s around it, so posts arrive before, during and
    # after it (--speed 1 would be real time: the posts are one second apart).
    speed = len(ids) / (outage_s + 20)
    args = ["ingest", "--source", f"jsonl:{feed}", "--speed", f"{speed:.3f}", "--port", str(port)]
    with log.open("wb") as err:
        daemon = subprocess.Popen(
            [*CLI, *args],
            env=env_for(data_dir, QUIPFEED_QDRANT__URL=qdrant.url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        before = wait_for(daemon, port, lambda s: s["posts"] >= 20)
        assert before["posts"] < len(ids), "the kill must land mid-stream"
        qdrant.kill()
        killed_at = time.monotonic()
        down_reports: list[dict[str, Any]] = []
        while time.monotonic() - killed_at < outage_s:
            assert daemon.poll() is None, log.read_text()[-3000:]
            status, health = healthz(port)
            if health["store"] == "down":
                assert status == 200 and health["status"] == "degraded", health
                if not down_reports:
                    # Scrapes and searches answer while the store is away, and say why.
                    assert store_up(port) == 0
                    searched = httpx.get(f"http://127.0.0.1:{port}/search?q=flood", timeout=30)
                    assert searched.status_code == 503, searched.text[:500]
                down_reports.append(health)
            time.sleep(1)
        retries = store_retries(log)
        qdrant.start()
        back_at = time.monotonic()

        assert down_reports, "/healthz never said the store was down"
        # Posts kept arriving and waited on the bus: the lag grew while the store was down.
        assert down_reports[-1]["bus_lag"] > down_reports[0]["bus_lag"]
        assert 2 <= len(retries) <= most_attempts(outage_s), [r["retry_in_s"] for r in retries]
        assert all("StoreUnavailable" in r["error"] for r in retries), retries[0]["error"]

        deadline = MAX_BACKOFF_S + 120  # the last backoff, then the rest of the feed
        stats = wait_for(
            daemon,
            port,
            lambda s: s["posts"] == len(ids) and s["bus_lag"] == 0,
            timeout=deadline,
        )
        caught_up_s = time.monotonic() - back_at
        assert stats["dead_letters"] == 0, stats["dead_letters_by_reason"]
        assert stats["published"] == len(ids)
        status, health = healthz(port)
        assert (status, health["store"], health["status"]) == (200, "ok", "ok"), health
        assert store_up(port) == 1
        assert daemon.poll() is None
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]

        store = ServerStore(qdrant.url, None, "posts", 384)
        try:
            assert store.count() == len(ids)
            assert {p.id for p in store.get(sorted(ids))} == ids
        finally:
            store.close()
        took = time.monotonic() - started
        later = [r["retry_in_s"] for r in store_retries(log)[len(retries) :]]
        print(
            f"\noutage {outage_s:g} s: {len(retries)} store retries "
            f"(delays {[r['retry_in_s'] for r in retries]}), then {later} once it was back; "
            f"caught up {caught_up_s:.1f} s after the server came back; test {took:.0f} s"
        )
    finally:
        stop(daemon)
        qdrant.kill()
        embedded.stop()
