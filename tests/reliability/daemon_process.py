"""Running `quipfeed ingest` and `quipfeed stats` as real subprocesses for the fault tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import BLUESKY_200

CLI = [sys.executable, "-m", "quipfeed.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def replay_file(tmp_path: Path, extra_lines: list[str] | None = None) -> tuple[Path, set[str]]:
    """The 200 real fixture posts, one second apart (a replay at --speed 40 takes ~5 s)."""
    start = datetime(2024, 5, 1, tzinfo=UTC)
    path = tmp_path / "feed.jsonl"
    ids = set()
    lines = []
    for i, line in enumerate(BLUESKY_200.read_text().splitlines()):
        post = json.loads(line)
        post["created_at"] = (start + timedelta(seconds=i)).isoformat()
        ids.add(post["id"])
        lines.append(json.dumps(post))
    path.write_text("\n".join(lines + (extra_lines or [])) + "\n")
    return path, ids


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **extra}


def start_daemon(feed: Path, env: dict[str, str], port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "ingest", "--source", f"jsonl:{feed}", "--port", str(port), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), then kill after 30 s."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)


def daemon_stats(port: int) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
        return data
    except (httpx.HTTPError, ValueError):
        return None


def wait_for(
    daemon: subprocess.Popen[bytes],
    port: int,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float = 180,
) -> dict[str, Any]:
    """Poll the daemon's /stats until `condition` holds; fail if the daemon dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            err = daemon.stderr.read().decode()[-3000:] if daemon.stderr else ""
            raise AssertionError(f"daemon exited with {daemon.returncode}: {err}")
        stats = daemon_stats(port)
        if stats is not None and condition(stats):
            return stats
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def final_stats(env: dict[str, str]) -> dict[str, Any]:
    done = run_cli(env, "stats", "--json", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(done.stdout)
    return data
