"""`quipfeed up`: the whole product in one process, started and stopped as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from quipfeed.embedded_redis import EmbeddedRedis
from tests.conftest import BLUESKY_200
from tests.ingest.test_crash_recovery import free_port

pytestmark = pytest.mark.slow


def test_up_without_a_model_serves_search_and_says_what_is_missing_then_stops_cleanly(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("QUIPFEED_MODEL__URL", None)
    env.pop("QUIPFEED_MODEL__PATH", None)
    web, ingest = free_port(), free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quipfeed.cli",
            "up",
            "--source",
            f"jsonl:{BLUESKY_200}",
            "--port",
            str(web),
            "--ingest-port",
            str(ingest),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert up.poll() is None, up.stderr.read().decode()[-3000:] if up.stderr else ""
            try:
                stats = httpx.get(f"http://127.0.0.1:{ingest}/stats", timeout=5).json()
                if stats["posts"] == 200 and stats["bus_lag"] == 0:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert httpx.get(f"{base}/healthz", timeout=5).json()["ok"] is True
        token = httpx.post(f"{base}/v1/session", timeout=10).json()["token"]
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c:
            target = json.loads(BLUESKY_200.read_text().splitlines()[3])
            cards = c.get("/v1/search", params={"q": target["text"][:100], "k": 5}).json()
            assert target["url"] in [card["url"] for card in cards]
            cid = c.post("/v1/conversations", json={}).json()["id"]
            with c.stream(
                "POST", f"/v1/conversations/{cid}/messages", json={"text": "what is new?"}
            ) as r:
                body = r.read().decode()
            assert "QUIPFEED_MODEL__URL" in body  # the reply says what to set, not a traceback
            assert "Traceback" not in body
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        assert not (data_dir / "daemon.json").exists()
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
        assert stats["posts"] == 200
        assert stats["bus_lag"] == 0
    finally:
        if up.poll() is None:
            up.kill()
        EmbeddedRedis(data_dir / "redis").stop()
