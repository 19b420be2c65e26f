"""A fake Qdrant server: Qdrant's REST API for the calls `retrieval.server_store.ServerStore`
makes, executed by qdrant-client's local mode on a store persisted on disk.

It stands in for the real server because none can run here (no Qdrant binary on PyPI, Debian
or npm). It speaks the wire protocol as qdrant-client 1.20's REST transport sends it (paths,
methods and bodies from `qdrant_client/http/api/*.py`): bodies are parsed into the
`qdrant_client.http.models` request types, results come back in Qdrant's envelope
`{"result": ..., "status": "ok", "time": s}`, errors as `{"status": {"error": "..."}}` with
Qdrant's status codes (400 bad input, 401 missing or wrong api key, 404 unknown collection or
path, 409 existing collection, 500 anything else).

Endpoints: `GET /` (version), `GET /healthz|/livez|/readyz`, and under
`/collections/{name}`: `GET` (info), `PUT` (create), `GET /exists`, `PUT /index`,
`PUT /points` (upsert), `POST /points` (retrieve), `POST /points/delete` (ids or filter),
`POST /points/query/batch`, `POST /points/count`, `POST /points/scroll`, `POST /facet`.

What it does not cover: gRPC; every other endpoint (snapshots, aliases, cluster, shard keys,
payload/vector updates, single-point GET); the `wait`, `ordering`, `consistency` and `timeout`
query parameters are accepted and ignored (every write is applied before the reply, status
`completed`); payload indexes are accepted but change nothing (local mode scans); search is
exact (local mode has no HNSW, so `hnsw_ef` changes nothing); no WAL: each point is committed to
SQLite as it is written, so a kill -9 mid-batch can leave part of an unacknowledged batch applied
(the client retries; point ids make that idempotent); no TLS, JWT, rate limits or strict mode.

Run it as a process so a test can kill -9 it and start it again on the same port and data:
`python -m tests.fakes.qdrant_server --port N --path DIR [--api-key KEY]` (binds 127.0.0.1
only). `FakeQdrant` does that for tests.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models as m

HOST = "127.0.0.1"
# Qdrant lets these through without an api key (probes must work without secrets).
_OPEN_PATHS = {"/", "/healthz", "/livez", "/readyz"}


class QdrantError(Exception):
    """An error Qdrant answers with `status` and `{"status": {"error": message}}`."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse(kind: Any, body: Any) -> Any:
    try:
        return TypeAdapter(kind).validate_python(body)
    except ValidationError as exc:
        raise QdrantError(HTTPStatus.BAD_REQUEST, f"Json deserialize error: {exc}") from exc


Handler = Callable[[QdrantClient, str, Any], Any]


def _exists(c: QdrantClient, name: str, _: Any) -> Any:
    return m.CollectionExistence(exists=c.collection_exists(name))


def _info(c: QdrantClient, name: str, _: Any) -> Any:
    return c.get_collection(name)


def _create(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.CreateCollection = _parse(m.CreateCollection, body)
    return c.create_collection(
        name, vectors_config=req.vectors, sparse_vectors_config=req.sparse_vectors
    )


def _index(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.CreateFieldIndex = _parse(m.CreateFieldIndex, body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # local mode: "indexes have no effect"
        return c.create_payload_index(name, req.field_name, req.field_schema)


def _upsert(c: QdrantClient, name: str, body: Any) -> Any:
    req = _parse(m.PointInsertOperations, body)
    if isinstance(req, m.PointsList):
        return c.upsert(name, points=req.points, update_filter=req.update_filter)
    return c.upsert(name, points=req.batch)


def _delete(c: QdrantClient, name: str, body: Any) -> Any:
    return c.delete(name, points_selector=_parse(m.PointsSelector, body))


def _query_batch(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.QueryRequestBatch = _parse(m.QueryRequestBatch, body)
    return c.query_batch_points(name, requests=req.searches)


def _retrieve(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.PointRequest = _parse(m.PointRequest, body)
    return c.retrieve(
        name,
        ids=req.ids,
        with_payload=True if req.with_payload is None else req.with_payload,
        with_vectors=False if req.with_vector is None else req.with_vector,
    )


def _count(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.CountRequest = _parse(m.CountRequest, body or {})
    return c.count(name, count_filter=req.filter, exact=True if req.exact is None else req.exact)


def _facet(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.FacetRequest = _parse(m.FacetRequest, body)
    return c.facet(
        name, req.key, facet_filter=req.filter, limit=req.limit or 10, exact=bool(req.exact)
    )


def _scroll(c: QdrantClient, name: str, body: Any) -> Any:
    req: m.ScrollRequest = _parse(m.ScrollRequest, body or {})
    points, next_offset = c.scroll(
        name,
        scroll_filter=req.filter,
        limit=req.limit or 10,
        offset=req.offset,
        with_payload=True if req.with_payload is None else req.with_payload,
        with_vectors=False if req.with_vector is None else req.with_vector,
        order_by=req.order_by,
    )
    return m.ScrollResult(points=points, next_page_offset=next_offset)


# (method, path under /collections/{name}) → handler, as qdrant-client's REST transport calls.
ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", ""): _info,
    ("PUT", ""): _create,
    ("GET", "/exists"): _exists,
    ("PUT", "/index"): _index,
    ("PUT", "/points"): _upsert,
    ("POST", "/points"): _retrieve,
    ("POST", "/points/delete"): _delete,
    ("POST", "/points/query/batch"): _query_batch,
    ("POST", "/points/count"): _count,
    ("POST", "/points/scroll"): _scroll,
    ("POST", "/facet"): _facet,
}
_COLLECTION_PATH = re.compile(r"^/collections/(?P<name>[^/]+)(?P<rest>(/[a-z]+)*)$")


class FakeQdrantServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, path: Path, api_key: str | None = None) -> None:
        # One client, one lock: local mode is not safe to share between request threads.
        self.client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
        self.lock = threading.Lock()
        self.api_key = api_key
        super().__init__((HOST, port), _RequestHandler)

    def answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Any:
        """The result of one request, or raises `QdrantError`."""
        path = urlsplit(target).path.rstrip("/") or "/"
        if self.api_key is not None and path not in _OPEN_PATHS and not self._authorised(headers):
            raise QdrantError(
                HTTPStatus.UNAUTHORIZED, "Must provide an API key or an Authorization bearer token"
            )
        match = _COLLECTION_PATH.match(path)
        handler = ROUTES.get((method, match["rest"])) if match else None
        if match is None or handler is None:
            raise QdrantError(HTTPStatus.NOT_FOUND, f"Not found: {method} {path}")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise QdrantError(HTTPStatus.BAD_REQUEST, f"Json deserialize error: {exc}") from exc
        name = unquote(match["name"])
        with self.lock:
            try:
                return handler(self.client, name, body)
            except ValueError as exc:  # how local mode reports a bad request
                text = str(exc)
                if "not found" in text:
                    raise QdrantError(
                        HTTPStatus.NOT_FOUND, f"Not found: Collection `{name}` doesn't exist!"
                    ) from exc
                if "already exists" in text:
                    raise QdrantError(
                        HTTPStatus.CONFLICT, f"Wrong input: Collection `{name}` already exists!"
                    ) from exc
                raise QdrantError(HTTPStatus.BAD_REQUEST, f"Wrong input: {text}") from exc

    def _authorised(self, headers: dict[str, str]) -> bool:
        assert self.api_key is not None
        given = headers.get("api-key") or ""
        bearer = headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:]
        return hmac.compare_digest(given.encode(), self.api_key.encode())


class _RequestHandler(BaseHTTPRequestHandler):
    server: FakeQdrantServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        started = time.perf_counter()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if self.command == "GET" and path in ("/healthz", "/livez", "/readyz"):
            self._send(HTTPStatus.OK, b"healthz check passed", "text/plain")
            return
        if self.command == "GET" and path == "/":
            info = {"title": "qdrant - vector search engine", "version": version("qdrant-client")}
            self._send(HTTPStatus.OK, json.dumps(info).encode())
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            result = self.server.answer(self.command, self.path, headers, raw)
            status, body = HTTPStatus.OK, {"result": to_jsonable_python(result), "status": "ok"}
        except QdrantError as exc:
            status, body = exc.status, {"status": {"error": str(exc)}}
        except Exception as exc:  # a bug here must reach the client as a 500, not hang it
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"status": {"error": repr(exc)}}
        body["time"] = time.perf_counter() - started
        self._send(status, json.dumps(body).encode())

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read the store, not access logs


class FakeQdrant:
    """The fake server as a child process on `port` (a free one if None) with its data in
    `path`: `start()` returns once it answers, `kill()` is kill -9, and `start()` again serves
    the same data on the same port. Its output goes to `path`.log. A context manager (started
    on entry, killed on exit)."""

    def __init__(self, path: Path, port: int | None = None, api_key: str | None = None) -> None:
        if port is None:
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = int(s.getsockname()[1])
        self.path, self.port, self.api_key = path, port, api_key
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "tests.fakes.qdrant_server"]
        args += ["--port", str(self.port), "--path", str(self.path)]
        if self.api_key is not None:
            args += ["--api-key", self.api_key]
        root = Path(__file__).resolve().parents[2]
        with open(f"{self.path}.log", "ab") as log:
            self.process = subprocess.Popen(
                args, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_text = Path(f"{self.path}.log").read_text()[-3000:]
                raise RuntimeError(f"fake Qdrant exited {self.process.returncode}: {log_text}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"fake Qdrant did not answer on {self.url} in {timeout:g} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self) -> FakeQdrant:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", type=Path, required=True, help="where the data lives")
    parser.add_argument("--api-key", default=None, help="require this key (api-key header)")
    args = parser.parse_args(argv)
    server = FakeQdrantServer(args.port, args.path, args.api_key)
    print(f"fake Qdrant on http://{HOST}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.client.close()


if __name__ == "__main__":
    main()
