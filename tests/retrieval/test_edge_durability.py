"""What an Edge write survives before `sync`: the process being killed (the WAL is replayed
on load), which is what lets the indexer sync once per group of batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from retrieval.edge_store import EdgeStore

WRITER = """
import pathlib, sys
from datetime import UTC, datetime
from retrieval.edge_store import EdgeStore
from retrieval.post import Post
store = EdgeStore(pathlib.Path(sys.argv[1]), 4)
posts = [Post(id=f"p{i}", text=f"post number {i}", created_at=datetime.now(UTC))
         for i in range(int(sys.argv[2]))]
for start in range(0, len(posts), 100):
    batch = posts[start:start + 100]
    store.upsert(batch, [[1.0, 0.5, 0.25, float(i)] for i in range(len(batch))])
store.delete(["p0", "p1"])
print("written", flush=True)  # and never synced: the test kills us now
sys.stdin.read()
"""


def test_writes_survive_kill_9_before_any_sync(tmp_path: Path) -> None:
    shard = tmp_path / "shard"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(shard), "1000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline().strip()
        assert line == "written", writer.stderr.read() if writer.stderr else ""
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    with EdgeStore(shard, 4) as store:
        assert store.count() == 998
        assert [p.id for p in store.get(["p0", "p2", "p999"])] == ["p2", "p999"]
