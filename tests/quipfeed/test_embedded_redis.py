"""The embedded redis-server's life: shared by the processes of one data dir, stopped by the
last of them (or by its keeper once they are all gone), never shared between data dirs, and
stopped with a single SHUTDOWN. Real redis-server processes throughout."""

from __future__ import annotations

import contextlib
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quipfeed.embedded_redis import EmbeddedRedis


def servers_of(directory: Path) -> list[int]:
    """Pids of the redis-server processes running with `directory` as their folder."""
    probe = EmbeddedRedis(directory)
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return sorted(pid for pid in pids if probe.is_ours(pid) and _running(pid))


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_until(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def redis_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "redis"
    yield directory
    EmbeddedRedis(directory).stop()
    assert _wait_until(lambda: servers_of(directory) == [])


class _CountingProxy(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A unix-socket relay in front of a real redis-server that counts the SHUTDOWN commands
    clients send, and the connections they open after one (a client retrying the command
    reconnects first: the server hung up)."""

    daemon_threads = True

    def __init__(self, path: Path, upstream: Path) -> None:
        self.upstream, self.lock = upstream, threading.Lock()
        self.shutdowns = self.connections_after_shutdown = 0
        super().__init__(str(path), _Relay)


class _Relay(socketserver.BaseRequestHandler):
    server: _CountingProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        upstream: socket.socket | None = None
        with self.server.lock:
            self.server.connections_after_shutdown += self.server.shutdowns > 0
        try:
            while chunk := client.recv(65536):
                with self.server.lock:
                    self.server.shutdowns += chunk.upper().count(b"SHUTDOWN")
                if upstream is None:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    upstream.connect(str(self.server.upstream))  # refused once it has gone
                    threading.Thread(target=self._back, args=(upstream,), daemon=True).start()
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            if upstream is not None:
                upstream.close()

    def _back(self, upstream: socket.socket) -> None:
        try:
            while chunk := upstream.recv(65536):
                self.request.sendall(chunk)
        except OSError:
            pass
        finally:
            # The server hung up (as SHUTDOWN makes it): so does the relay, to the client.
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)


def test_stop_sends_shutdown_once_and_returns_when_the_server_is_gone(redis_dir: Path) -> None:
    server = EmbeddedRedis(redis_dir)
    server.ensure_running()
    redis.Redis(unix_socket_path=str(server.socket)).set("kept", "1")
    pid = server.pid()
    assert pid is not None
    # `stop` talks to the server through a relay: redis-server removes its own socket file
    # as it exits, the relay's stays, so a client that tries again reaches the relay.
    relay = redis_dir / "relay.sock"
    proxy = _CountingProxy(relay, server.socket)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    server.socket = relay
    try:
        server.stop()
    finally:
        proxy.shutdown()
        proxy.server_close()
    # redis-py's default retry would reconnect to send it again after the server hangs up
    # (backing off for seconds): one SHUTDOWN, and no connection after it.
    assert proxy.shutdowns == 1
    assert proxy.connections_after_shutdown == 0
    assert not _running(pid)
    # SHUTDOWN SAVE: the write is on disk; a new server finds it.
    again = EmbeddedRedis(redis_dir)
    assert redis.Redis.from_url(again.ensure_running()).get("kept") == b"1"


def test_two_data_dirs_get_two_servers_that_share_nothing(tmp_path: Path) -> None:
    a, b = EmbeddedRedis(tmp_path / "a" / "redis"), EmbeddedRedis(tmp_path / "b" / "redis")
    try:
        ra, rb = redis.Redis.from_url(a.ensure_running()), redis.Redis.from_url(b.ensure_running())
        ra.set("who", "a")
        assert rb.get("who") is None
        assert a.socket != b.socket
        assert servers_of(a.directory) == [a.pid()] and servers_of(b.directory) == [b.pid()]
        assert a.pid() != b.pid()
    finally:
        a.stop()
        b.stop()


_USER = """
import sys
from pathlib import Path
from quipfeed.embedded_redis import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]))
server.ensure_running()
print(server.pid(), flush=True)
sys.stdin.readline()  # until told (or killed)
server.release()
"""


def _user(directory: Path) -> tuple[subprocess.Popen[str], int]:
    """Another process using the data dir's server; returns it and the server's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _USER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_the_server_lives_while_any_process_uses_it_and_stops_with_the_last(
    redis_dir: Path,
) -> None:
    other, pid = _user(redis_dir)
    try:
        mine = EmbeddedRedis(redis_dir)
        mine.ensure_running()
        assert mine.pid() == pid and not mine.started_here  # reused, not a second server
        assert other.stdin is not None
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.wait(timeout=30) == 0
        assert _running(pid)  # this process still uses it
        mine.release()
        assert not _running(pid)  # the last user stopped it, before `release` returned
    finally:
        other.kill()


def test_a_server_whose_users_were_all_killed_stops_by_itself(redis_dir: Path) -> None:
    other, pid = _user(redis_dir)
    other.send_signal(signal.SIGKILL)
    other.wait(timeout=30)
    # Its keeper finds no live user and shuts it down (saving) within a poll or two.
    assert _wait_until(lambda: not _running(pid))
    assert servers_of(redis_dir) == []
    assert _wait_until(lambda: not EmbeddedRedis(redis_dir).alive(timeout=0.2))


def test_a_server_that_no_longer_answers_is_replaced_not_doubled(redis_dir: Path) -> None:
    first = EmbeddedRedis(redis_dir)
    first.ensure_running()
    old = first.pid()
    assert old is not None
    first.socket.unlink()  # still running, unreachable: as after a crash that lost the socket
    second = EmbeddedRedis(redis_dir)
    second.ensure_running()
    assert second.started_here
    assert second.pid() != old and not _running(old)
    assert servers_of(redis_dir) == [second.pid()]


def test_a_pidfile_naming_another_program_never_gets_it_killed(redis_dir: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        redis_dir.mkdir(parents=True)
        (redis_dir / "redis.pid").write_text(str(sleeper.pid))
        server = EmbeddedRedis(redis_dir)
        server.ensure_running()
        assert sleeper.poll() is None
        assert server.pid() != sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
