"""`--tiny` builds its random model in the temp dir and leaves nothing there: not
`serve-model --tiny` (a real process, stopped as a user stops it), nor the engine `up --tiny`
and `web --tiny` open."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from inference.messages import ChatMessage, SamplingParams
from quipfeed.runtime import open_engine
from quipfeed.settings import Settings

pytestmark = pytest.mark.slow


def test_serve_model_tiny_leaves_no_folder_in_the_temp_dir(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "quipfeed.cli", "serve-model", "--tiny", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        deadline = time.monotonic() + 300
        url = None
        while url is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            assert line, "serve-model exited before serving"
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", line)
            url = found.group(1) if found else None
        assert url is not None
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200
        # SIGTERM, as `docker stop` or `kill` sends it (the process may end by the signal).
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    # (torch keeps a cache of its own there, `torchinductor_<user>`, shared by every run.)
    assert list(temp.glob("quipfeed-*")) == []


async def test_the_tiny_engine_of_up_and_web_leaves_no_folder_in_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    engine = await open_engine(Settings(data_dir=tmp_path / "data"), tiny=True)
    try:
        assert [n for n in os.listdir(tmp_path) if n.startswith("quipfeed-")] == []
        params = SamplingParams(max_tokens=4)
        reply = await engine.generate([ChatMessage(role="user", content="hi")], params)
        assert reply.usage.completion_tokens > 0  # it still answers without its folder
    finally:
        await engine.aclose()
