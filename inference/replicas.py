"""Several local model workers behind SGLang's Model Gateway (`smg`): what
`quipfeed serve-model --workers N` runs, and what the router tests and
`quipfeed bench inference --router` start.

Each worker is its own process (`python -m inference.serve`, the same app as
`quipfeed serve-model`), so a worker can be killed, hang or crash without taking the others
along, as SGLang replicas do. The gateway is the real `smg` binary from PyPI (the `smg`
package, a Rust binary with a Python launcher). `sglang-router` 0.3.2, its stale predecessor,
can still be started (`kind="sglang-router"`) for the side-by-side benchmark only.

What smg 1.13 does with workers (observed, not assumed; see docs/scaling.md):
- It registers a worker after `/v1/models`, `/server_info` and `/model_info` answer (`/version`
  may 404); one that is down at start is retried in the background for
  `--worker-startup-timeout-secs`. Its `/health` answers 200 before any worker is registered,
  so readiness here means `/workers` lists the expected number of healthy workers.
- It polls each worker's load from `/v1/loads` (SGLang's schema), every
  `--load-monitor-interval` seconds, and health from `/health`.
- `cache_aware` over HTTP keys on the text of every message of a chat request joined, so a
  conversation's next turn matches the worker that served its previous turns.
  (sglang-router 0.3.2 keyed on less of the conversation; the benchmark shows what that costs.)
- A failed request is retried (`--retry-max-retries`); a worker whose circuit breaker opens
  (`--cb-failure-threshold` failures) is skipped. Hence the low breaker threshold here.
- Its Prometheus metrics (`smg_*`) are served on a separate port (`--prometheus-port`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import httpx

Policy = Literal["cache_aware", "round_robin", "random", "power_of_two"]
# The gateway binary: smg (what quipfeed runs) or the stale sglang-router 0.3.2 (benchmark only).
GatewayKind = Literal["smg", "sglang-router"]
INSTALL_HINT: dict[GatewayKind, str] = {
    "smg": "pip install smg",
    "sglang-router": "pip install 'quipfeed[bench]' (sglang-router 0.3.2)",
}


class ReplicaError(RuntimeError):
    """A worker or the router did not start (the message carries the end of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (the usual small race before it is bound again)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def gateway_command(kind: GatewayKind = "smg") -> list[str] | None:
    """The argv prefix that starts `kind`'s launcher, or None when it is not installed.

    smg: this interpreter's `smg` package (`python -m smg`), which an unactivated virtual
    environment has without its scripts on PATH; else an `smg` on PATH. Not the `smg` script
    beside the interpreter: sglang-router 0.3.2 installs a script of that name too, and the
    package installed last owns it. sglang-router: its script beside this Python, else on PATH.
    """
    if kind == "smg":
        if importlib.util.find_spec("smg") is not None:
            return [sys.executable, "-m", "smg"]
        found = shutil.which("smg")
        return [found] if found else None
    beside = Path(sys.executable).parent / "sglang-router"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("sglang-router")
    return [found] if found else None


@dataclass(frozen=True)
class RouterOptions:
    """The `smg launch` flags quipfeed sets (sglang-router 0.3.2 takes the same ones). Defaults
    suit a handful of replicas: a dead worker is dropped after 2 failed attempts (the breaker
    opens and the router's retry goes to another worker), health is checked every 5 s, and no
    request waits more than `request_timeout_s`."""

    policy: Policy = "cache_aware"
    # Above the share of a first turn that the shared system prompt makes up (~35% here), so a
    # new conversation is a miss and goes to the least-loaded worker, while a later turn (the
    # previous prompt and reply are >= 60% of it) matches and stays where its prefix is.
    cache_threshold: float = 0.5
    retries: int = 4
    cb_failure_threshold: int = 2
    cb_cooldown_s: int = 15
    health_interval_s: int = 5
    health_failures: int = 2
    health_timeout_s: int = 5
    request_timeout_s: int = 120
    worker_startup_timeout_s: int = 600
    log_level: Literal["debug", "info", "warn", "error"] = "warn"

    def argv(self) -> list[str]:
        return [
            "--policy",
            self.policy,
            "--cache-threshold",
            str(self.cache_threshold),
            "--retry-max-retries",
            str(self.retries),
            "--cb-failure-threshold",
            str(self.cb_failure_threshold),
            "--cb-timeout-duration-secs",
            str(self.cb_cooldown_s),
            "--health-check-interval-secs",
            str(self.health_interval_s),
            "--health-failure-threshold",
            str(self.health_failures),
            "--health-check-timeout-secs",
            str(self.health_timeout_s),
            "--request-timeout-secs",
            str(self.request_timeout_s),
            "--worker-startup-timeout-secs",
            str(self.worker_startup_timeout_s),
            "--worker-startup-check-interval",
            "1",
            "--log-level",
            self.log_level,
        ]


def router_argv(
    worker_urls: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 30000,
    metrics_port: int = 29000,
    options: RouterOptions | None = None,
    kind: GatewayKind = "smg",
) -> list[str]:
    """argv for `smg launch` (or `sglang-router launch`) in front of `worker_urls`, metrics on
    `metrics_port`."""
    return [
        *(gateway_command(kind) or [kind]),
        "launch",
        "--host",
        host,
        "--port",
        str(port),
        "--worker-urls",
        *worker_urls,
        "--prometheus-host",
        host,
        "--prometheus-port",
        str(metrics_port),
        *(options or RouterOptions()).argv(),
    ]


class _Child:
    """A child process whose output goes to a log file; stopped (and reaped) on `stop()`."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Own process group: Ctrl-C in a terminal reaches the parent, which stops children
            # in order, rather than every process at once.
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _answers_200(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _wait_until(check: Callable[[], bool], child: _Child, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive:
            raise ReplicaError(
                f"{what} exited with status {child.proc.returncode}:\n{child.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if check():
                return
        time.sleep(0.1)
    raise ReplicaError(f"{what} not ready after {timeout_s:.0f} s:\n{child.log_tail()}")


class WorkerPool:
    """`n` local model servers (`python -m inference.serve`) on 127.0.0.1, one process each.

    `start()` blocks until every worker answers `/health`; `urls` are their base URLs.
    Use as a context manager, or call `start()`/`stop()`; `stop()` is safe after a failed start.
    """

    def __init__(
        self,
        model: str | Path,
        n: int,
        *,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        device: str = "auto",
        prefix_cache_tokens: int = 16_384,
        max_batch_size: int = 16,
        context_window: int | None = None,
        threads: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a pool needs at least one worker")
        if ports is not None and len(ports) != n:
            raise ValueError(f"{n} workers need {n} ports, got {len(ports)}")
        self.model = str(model)
        self.host = host
        self.ports = list(ports) if ports is not None else [free_port(host) for _ in range(n)]
        self.device = device
        self.prefix_cache_tokens = prefix_cache_tokens
        self.max_batch_size = max_batch_size
        self.context_window = context_window
        # CPU threads per worker (torch reads OMP_NUM_THREADS at start): N workers on N cores
        # each with one thread beat N workers fighting over all cores. None: torch's default.
        self.threads = threads
        # A log folder made here is removed on stop(); errors carry the end of the log.
        self._own_logs = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="quipfeed-workers-"))
        self.workers: list[_Child] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{p}" for p in self.ports]

    def _argv(self, port: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "inference.serve",
            "--model",
            self.model,
            "--host",
            self.host,
            "--port",
            str(port),
            "--device",
            self.device,
            "--max-batch-size",
            str(self.max_batch_size),
            "--prefix-cache-tokens",
            str(self.prefix_cache_tokens),
        ]
        if self.context_window is not None:
            argv += ["--context-window", str(self.context_window)]
        return argv

    def start(self, timeout_s: float = 300.0) -> WorkerPool:
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        try:
            for i, port in enumerate(self.ports):
                self.workers.append(
                    _Child(self._argv(port), self.log_dir / f"worker-{i}.log", env=env)
                )
            # Started together, awaited together: loading overlaps.
            for i, (child, url) in enumerate(zip(self.workers, self.urls, strict=True)):
                _wait_until(
                    functools.partial(_answers_200, url + "/health"),
                    child,
                    f"worker {i} ({url})",
                    timeout_s,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, i: int) -> None:
        """SIGKILL worker `i` (a crash, for tests)."""
        self.workers[i].kill()

    def stop(self) -> None:
        for child in self.workers:
            child.stop()
        if self._own_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Router:
    """The gateway (`smg`, or `kind="sglang-router"`) in front of `worker_urls`, on 127.0.0.1
    (free ports unless given).

    `start(expect_workers=k)` blocks until the router lists `k` healthy workers (default: all).
    `url` is what `QUIPFEED_MODEL__URL` should point at; `metrics()` scrapes its Prometheus port.
    """

    def __init__(
        self,
        worker_urls: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        metrics_port: int | None = None,
        options: RouterOptions | None = None,
        log_dir: Path | None = None,
        kind: GatewayKind = "smg",
    ) -> None:
        self.kind = kind
        self.worker_urls = list(worker_urls)
        self.host = host
        self.port = port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.options = options or RouterOptions()
        self._own_logs = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="quipfeed-router-"))
        self._child: _Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        return router_argv(
            self.worker_urls,
            host=self.host,
            port=self.port,
            metrics_port=self.metrics_port,
            options=self.options,
            kind=self.kind,
        )

    def start(self, expect_workers: int | None = None, timeout_s: float = 60.0) -> Router:
        if gateway_command(self.kind) is None:
            raise ReplicaError(f"{self.kind} is not installed ({INSTALL_HINT[self.kind]})")
        want = len(self.worker_urls) if expect_workers is None else expect_workers
        self._child = _Child(self.argv(), self.log_dir / "router.log")
        try:
            _wait_until(
                lambda: self.healthy_workers() >= want,
                self._child,
                f"{self.kind} ({self.url})",
                timeout_s,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def workers(self) -> list[dict[str, Any]]:
        """The router's own view (`GET /workers`): url, is_healthy, load (in-flight requests)."""
        body = httpx.get(self.url + "/workers", timeout=5).json()
        return list(body.get("workers", []))

    def healthy_workers(self) -> int:
        return sum(1 for w in self.workers() if w.get("is_healthy"))

    def metrics(self) -> str:
        """The router's Prometheus exposition (`smg_*` families)."""
        return httpx.get(self.metrics_url, timeout=5).text

    def log_tail(self, chars: int = 2000) -> str:
        return self._child.log_tail(chars) if self._child else ""

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
        if self._own_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in Prometheus text whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total
