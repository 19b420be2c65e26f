"""Listening sockets for the serving commands, opened before anything slow (a model load) so a
taken port fails at once, in one line that names the flag to change."""

from __future__ import annotations

import errno
import socket


class PortUnavailable(OSError):
    """The address cannot be listened on; the message says which flag picks another."""

    def __str__(self) -> str:
        return str(self.args[0])


def listen(host: str, port: int, flag: str = "--port") -> socket.socket:
    """A TCP socket listening on `host:port` (0: a free port; `sock.getsockname()` says which).

    Hand it to the server (uvicorn's `serve(sockets=[…])`, aiohttp's `SockSite`) rather than a
    port number: nothing can take the port between this check and the server's start."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror} (see --host)"
        ) from None
    sock = socket.socket(family, kind, proto)
    # A restart may rebind while the last run's connections sit in TIME_WAIT; a live listener
    # on the port still makes bind fail.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                f"{host}:{port} is already in use (another quipfeed, or another program); "
                f"pick a free port with {flag}"
            ) from None
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another with {flag} or --host"
        ) from None
    sock.setblocking(False)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])
