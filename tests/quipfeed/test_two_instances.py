"""Two quipfeeds on one machine: one-shot runs need no fixed port, two data dirs never share
a port, a Redis or a daemon.json, and a daemon killed with -9 leaves no redis-server behind
once it has been restarted and stopped. Real processes and the real embedding model."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from quipfeed.embedded_redis import EmbeddedRedis
from tests.conftest import BLUESKY_200
from tests.quipfeed.test_embedded_redis import servers_of

pytestmark = pytest.mark.slow
DEFAULT_INGEST_PORT = 8765  # what a one-shot run must not need


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIPFEED_")}
    return {**env, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}


def _start(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "quipfeed.cli", "ingest", *args],
        env=_env(data_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def _default_port_taken() -> Iterator[None]:
    """127.0.0.1:8765 held by this test for the duration (or already held by something else:
    either way a run that needed it would fail)."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_INGEST_PORT))
        holder.listen()
    except OSError as exc:
        holder.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        yield
        return
    with holder:
        yield


@dataclass
class OneShot:
    data_dir: Path
    process: subprocess.Popen[str]
    urls_answering: set[str] = field(default_factory=set)  # daemon.json's URL, seen healthy
    stdout: str = ""
    stderr: str = ""


def _watch(runs: list[OneShot], timeout: float = 600) -> None:
    """Until every run has exited: whenever a run's daemon.json names a URL, check it answers."""
    deadline = time.monotonic() + timeout
    while any(r.process.poll() is None for r in runs):
        assert time.monotonic() < deadline, "one-shot ingest did not finish"
        for r in runs:
            with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
                url = json.loads((r.data_dir / "daemon.json").read_text())["url"]
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    r.urls_answering.add(url)
        time.sleep(0.02)
    for r in runs:
        r.stdout, r.stderr = r.process.communicate()


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[OneShot]]:
    """Two `ingest --once` runs at the same time, each on a data dir of its own (120 and 80 of
    the fixture posts), while the default ingest port is taken."""
    root = tmp_path_factory.mktemp("two")
    lines = BLUESKY_200.read_text().splitlines()
    runs = []
    with _default_port_taken():
        for name, part in (("a", lines[:120]), ("b", lines[120:])):
            feed = root / f"{name}.jsonl"
            feed.write_text("\n".join(part) + "\n")
            data_dir = root / name
            process = _start(data_dir, "--once", "--json", "--source", f"jsonl:{feed}")
            runs.append(OneShot(data_dir, process))
        try:
            _watch(runs)
        finally:
            for r in runs:
                if r.process.poll() is None:
                    r.process.kill()
    yield runs
    for r in runs:
        EmbeddedRedis(r.data_dir / "redis").stop()


def test_one_shot_runs_need_no_fixed_port_and_record_the_one_they_got(
    side_by_side: list[OneShot],
) -> None:
    for run in side_by_side:
        assert run.process.returncode == 0, run.stderr[-3000:]
        (url,) = run.urls_answering  # daemon.json named it, and it answered while running
        assert not url.endswith(f":{DEFAULT_INGEST_PORT}")
        assert not (run.data_dir / "daemon.json").exists()  # gone with the run
    a, b = side_by_side
    assert a.urls_answering != b.urls_answering


def test_two_data_dirs_side_by_side_keep_their_own_posts(side_by_side: list[OneShot]) -> None:
    for run, expected in zip(side_by_side, (120, 80), strict=True):
        stats = subprocess.run(
            [sys.executable, "-m", "quipfeed.cli", "stats", "--json"],
            env=_env(run.data_dir),
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert json.loads(stats.stdout)["posts"] == expected
        # Each data dir's Redis lives in it, and none outlived its run.
        assert servers_of(run.data_dir / "redis") == []


def _wait_healthy(data_dir: Path, process: subprocess.Popen[str], timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
            info = json.loads((data_dir / "daemon.json").read_text())
            if info["pid"] == process.pid:
                stats = httpx.get(f"{info['url']}/stats", timeout=5).json()
                if stats["posts"] == 200 and stats["bus_lag"] == 0:
                    return str(info["url"])
        time.sleep(0.1)
    raise AssertionError("the daemon did not index the feed in time")


def test_a_daemon_killed_with_minus_9_then_restarted_runs_on_one_redis_and_leaves_none(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    args = ("--port", "0", "--source", f"jsonl:{BLUESKY_200}")
    first = _start(data_dir, *args)
    try:
        _wait_healthy(data_dir, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        again = _start(data_dir, *args)
        try:
            _wait_healthy(data_dir, again)  # nothing lost: the 200 posts, no lag
            # The killed daemon's server was reused or replaced: one server, never two.
            assert len(servers_of(data_dir / "redis")) == 1
            again.send_signal(signal.SIGINT)
            assert again.wait(timeout=120) == 0
            # The last user stopped it on the way out.
            assert servers_of(data_dir / "redis") == []
        finally:
            if again.poll() is None:
                again.kill()
    finally:
        if first.poll() is None:
            first.kill()
        EmbeddedRedis(data_dir / "redis").stop()
