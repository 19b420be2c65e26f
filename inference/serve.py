"""Running the OpenAI-compatible server: in the foreground (the CLI) or on a background thread
(tests, benches, demos)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

from inference.engine import Engine
from inference.server import create_app


def _loopback_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class ServerThread:
    """Serves `engine` on 127.0.0.1 (a free port unless `port` is given) from a daemon thread.

    `url` is the base URL (no `/v1`). Use as a context manager, or call `start()`/`stop()`.
    """

    def __init__(self, engine: Engine, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = _loopback_socket(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(create_app(engine), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="model-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        for _ in range(int(timeout / 0.02)):
            if self._server.started:
                return self
            self._thread.join(0.02)
        raise RuntimeError("model server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_server(
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 30000,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Serve `engine` in the foreground until interrupted (Ctrl-C), on `sock` when given (a
    socket the caller bound before loading the model, so a taken port fails early), else on
    `host:port`."""
    if sock is None:
        uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level)
        return
    uvicorn.Server(uvicorn.Config(create_app(engine), log_level=log_level)).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """`python -m inference.serve --model PATH --port P ...`: one worker process, as
    `inference.replicas.WorkerPool` starts them (the package cannot call quipfeed's CLI)."""
    import argparse

    from inference.local import LocalEngine

    parser = argparse.ArgumentParser(prog="python -m inference.serve")
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--prefix-cache-tokens", type=int, default=16_384)
    parser.add_argument("--context-window", type=int, default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    engine = LocalEngine.load(
        args.model,
        device=args.device,
        max_batch_size=args.max_batch_size,
        prefix_cache_tokens=args.prefix_cache_tokens,
        context_window=args.context_window,
    )
    try:
        run_server(engine, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
