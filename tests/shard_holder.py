"""A real Qdrant Edge shard held open by another process (as a running `quipfeed ingest` would
hold it), for tests of what everything else does while it cannot open the shard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLDER = """
import pathlib, sys
from retrieval.edge_store import EdgeStore
store = EdgeStore(pathlib.Path(sys.argv[1]), int(sys.argv[2]))
print("holding", flush=True)
sys.stdin.read()  # hold the shard until the test closes our stdin
store.close()
"""


class ShardHolder:
    """Opens the shard at `path` in a separate Python process until `release()`."""

    def __init__(self, path: Path, dim: int = 384) -> None:
        self.path, self.dim = path, dim
        self._proc: subprocess.Popen[str] | None = None

    def hold(self) -> ShardHolder:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(self.path), str(self.dim)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "holding":
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self.release()
            raise RuntimeError(f"the holder could not open the shard: {err[-2000:]}")
        return self

    def release(self) -> None:
        """Close the shard in the holder and wait for it to exit (the lock goes with it)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)

    def __enter__(self) -> ShardHolder:
        return self.hold()

    def __exit__(self, *exc: object) -> None:
        self.release()
