"""Every serving command whose port is taken says so in one line that names the flag to
change, and exits non-zero, before it loads anything slow. Real processes; the taken port
is one this test listens on (an ephemeral one, never a fixed number)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield int(holder.getsockname()[1])


def quipfeed(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUIPFEED_")}
    return subprocess.run(
        [sys.executable, "-m", "quipfeed.cli", *args],
        env={**base, "QUIPFEED_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_naming(result: subprocess.CompletedProcess[str], flag: str, port: int) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert f"127.0.0.1:{port} is already in use" in lines[0]
    assert lines[0].endswith(f"pick a free port with {flag}")


def test_ingest_with_its_port_taken_names_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(tmp_path, "ingest", "--source", "sample", "--port", str(taken_port))
    assert_one_line_naming(result, "--port", taken_port)


def test_ingest_once_with_a_port_given_and_taken_names_port(
    tmp_path: Path, taken_port: int
) -> None:
    args = ["ingest", "--once", "--source", "sample", "--port", str(taken_port)]
    assert_one_line_naming(quipfeed(tmp_path, *args), "--port", taken_port)


def test_ingest_with_the_settings_port_taken_names_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(
        tmp_path, "ingest", "--source", "sample", QUIPFEED_INGEST__PORT=str(taken_port)
    )
    assert_one_line_naming(result, "--port", taken_port)


def test_up_with_its_web_port_taken_names_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(tmp_path, "up", "--port", str(taken_port), "--ingest-port", "0")
    assert_one_line_naming(result, "--port", taken_port)


def test_up_with_its_ingest_port_taken_names_ingest_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(tmp_path, "up", "--port", "0", "--ingest-port", str(taken_port))
    assert_one_line_naming(result, "--ingest-port", taken_port)


def test_web_with_its_port_taken_names_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(tmp_path, "web", "--tiny", "--port", str(taken_port))
    assert_one_line_naming(result, "--port", taken_port)


def test_serve_model_with_its_port_taken_names_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(tmp_path, "serve-model", "--tiny", "--port", str(taken_port))
    assert_one_line_naming(result, "--port", taken_port)


def test_discord_bot_with_its_health_port_taken_names_port(tmp_path: Path, taken_port: int) -> None:
    result = quipfeed(
        tmp_path, "bot", "discord", "--port", str(taken_port), QUIPFEED_DISCORD__TOKEN="x.y.z"
    )
    assert_one_line_naming(result, "--port", taken_port)
