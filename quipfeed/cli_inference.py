"""CLI commands for the inference package: `serve-model` and `bench inference`.

`quipfeed/cli.py` calls `register(app, bench_app)`; each command is a few lines over a package
function.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer


def _bench_module(name: str = "inference") -> ModuleType:
    # `bench/` sits at the repo root, next to the packages, and is not installed.
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError:
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        if not path.is_file():
            raise typer.BadParameter(f"benchmark code not found at {path}") from None
        spec = importlib.util.spec_from_file_location(f"quipfeed_bench_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


def serve_model(
    model: Annotated[
        str | None, typer.Option(help="A model folder (or a hub id, if reachable).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 30000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    max_batch_size: Annotated[
        int, typer.Option(min=1, max=1024, help="Sequences decoded together.")
    ] = 16,
    prefix_cache_tokens: Annotated[
        int, typer.Option(min=0, help="Prompt-prefix KV cache size in tokens (0: off).")
    ] = 16_384,
    tiny: Annotated[
        bool, typer.Option(help="Serve a freshly built tiny random MoE (demos, tests).")
    ] = False,
    sglang_profile: Annotated[
        str | None, typer.Option(help="Print the SGLang launch command of this profile and exit.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            help="Run N worker processes (ports PORT+1..PORT+N) behind smg (SGLang's Model "
            "Gateway) on PORT.",
        ),
    ] = 0,
    policy: Annotated[
        str, typer.Option(help="Router policy with --workers: cache_aware, round_robin, random.")
    ] = "cache_aware",
    router_metrics_port: Annotated[
        int, typer.Option(help="Port of the router's Prometheus /metrics (with --workers).")
    ] = 29000,
) -> None:
    """Serve a local model over the OpenAI-compatible API (what SGLang speaks), streaming SSE."""
    if sglang_profile is not None:
        from inference.launch import load_profile, router_command, server_command

        try:
            profile = load_profile(sglang_profile)
        except KeyError as e:
            raise typer.BadParameter(str(e.args[0]), param_hint="--sglang-profile") from None
        typer.echo(f"# {profile.description} — {profile.gpus} GPU(s), {profile.memory_note}")
        typer.echo(" ".join(server_command(profile, host=host, port=port)))
        if profile.worker_profile is not None:
            typer.echo(
                " ".join(
                    router_command(
                        profile,
                        ["http://WORKER1:30000", "http://WORKER2:30000"],
                        host=host,
                        port=port,
                    )
                )
            )
        return
    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("device must be auto, cpu or cuda", param_hint="--device")
    if tiny == (model is not None):
        raise typer.BadParameter("give --model PATH or --tiny (one of them)", param_hint="--model")

    if policy not in ("cache_aware", "round_robin", "random", "power_of_two"):
        raise typer.BadParameter(
            "policy must be cache_aware, round_robin, random or power_of_two", param_hint="--policy"
        )

    # One process: its port is bound now, before a model is built or loaded, so a taken port
    # fails at once. (With --workers the router and workers bind their own; see `_serve`.)
    listener = _listen_or_exit(host, port, "--port") if workers == 0 else None
    if tiny:
        import tempfile

        from inference.tiny_model import build_tiny_moe

        # The tiny model's files live no longer than the server needs them: one process removes
        # them once the model is loaded (SIGTERM then leaves nothing behind), workers when the
        # supervisor stops.
        with tempfile.TemporaryDirectory(
            prefix="quipfeed-tiny-", ignore_cleanup_errors=True
        ) as tmp:
            folder = str(build_tiny_moe(Path(tmp) / "tiny-moe"))
            _serve(
                folder,
                listener,
                host,
                port,
                device,
                max_batch_size,
                prefix_cache_tokens,
                workers,
                policy,
                router_metrics_port,
                discard=Path(tmp),
            )
        return
    assert model is not None
    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        typer.echo(
            f"error: {model} has no config.json; is it a transformers model folder?", err=True
        )
        raise typer.Exit(1)
    _serve(
        model,
        listener,
        host,
        port,
        device,
        max_batch_size,
        prefix_cache_tokens,
        workers,
        policy,
        router_metrics_port,
    )


def _listen_or_exit(host: str, port: int, flag: str) -> socket.socket:
    from quipfeed.ports import PortUnavailable, listen

    try:
        return listen(host, port, flag)
    except PortUnavailable as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


def _serve(
    model: str,
    listener: socket.socket | None,
    host: str,
    port: int,
    device: str,
    max_batch_size: int,
    prefix_cache_tokens: int,
    workers: int,
    policy: str,
    router_metrics_port: int,
    discard: Path | None = None,
) -> None:
    """Serve `model`; `discard` is a folder (the tiny model's) to remove once it is loaded."""
    if listener is None:
        # The router and workers bind their own ports; check them now, before anything starts.
        ports = [(port, "--port"), (router_metrics_port, "--router-metrics-port")]
        ports += [(port + 1 + i, "--port (workers use the ports after it)") for i in range(workers)]
        for number, flag in ports:
            _listen_or_exit(host, number, flag).close()
        _serve_replicas(
            model,
            workers,
            host,
            port,
            device,
            max_batch_size,
            prefix_cache_tokens,
            policy,
            router_metrics_port,
        )
        return
    # Imported here, not above: with --workers this process only supervises (no torch).
    from inference.errors import EngineUnavailable
    from inference.local import LocalEngine
    from inference.serve import run_server

    try:
        engine = LocalEngine.load(
            model,
            device=device,  # type: ignore[arg-type]
            max_batch_size=max_batch_size,
            prefix_cache_tokens=prefix_cache_tokens,
        )
    except EngineUnavailable as e:
        listener.close()
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if discard is not None:
        import shutil

        shutil.rmtree(discard, ignore_errors=True)
    from quipfeed.ports import port_of

    typer.echo(
        f"serving {engine.model_name} on http://{host}:{port_of(listener)}/v1 "
        f"(context {engine.context_window}, batch {max_batch_size})",
        err=True,
    )
    from quipfeed import logs

    # One `chat completion` line per request, with the caller's X-Request-ID.
    logs.configure(os.environ.get("QUIPFEED_LOG_LEVEL", "INFO"))
    try:
        run_server(engine, host=host, port=port, sock=listener)
    finally:
        engine.close()


def _serve_replicas(
    model: str,
    n: int,
    host: str,
    port: int,
    device: str,
    max_batch_size: int,
    prefix_cache_tokens: int,
    policy: str,
    metrics_port: int,
) -> None:
    import signal
    import time
    from types import FrameType

    from inference.replicas import (
        INSTALL_HINT,
        ReplicaError,
        Router,
        RouterOptions,
        WorkerPool,
        gateway_command,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop, kill) stops the children like Ctrl-C

    if gateway_command("smg") is None:
        typer.echo(f"error: --workers needs smg ({INSTALL_HINT['smg']})", err=True)
        raise typer.Exit(1)
    signal.signal(signal.SIGTERM, _stop)

    pool = WorkerPool(
        model,
        n,
        host=host,
        ports=[port + 1 + i for i in range(n)],
        device=device,
        max_batch_size=max_batch_size,
        prefix_cache_tokens=prefix_cache_tokens,
    )
    router = Router(
        pool.urls,
        host=host,
        port=port,
        metrics_port=metrics_port,
        options=RouterOptions(policy=policy),  # type: ignore[arg-type]  # checked above
    )
    try:
        typer.echo(f"starting {n} workers: {' '.join(pool.urls)} (logs: {pool.log_dir})", err=True)
        pool.start()
        router.start()
        typer.echo(
            f"smg ({policy}) on {router.url} in front of {n} workers; "
            f"router metrics on {router.metrics_url}\n"
            f"QUIPFEED_MODEL__URL={router.url}/v1",
            err=True,
        )
        reported: set[int] = set()
        while True:
            time.sleep(1)
            for i, child in enumerate(pool.workers):
                if not child.alive and i not in reported:
                    reported.add(i)
                    typer.echo(
                        f"worker {i} ({pool.urls[i]}) exited; the router serves from the others",
                        err=True,
                    )
            if len(reported) == n:
                typer.echo("error: every worker has exited", err=True)
                raise typer.Exit(1)
    except ReplicaError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        router.stop()
        pool.stop()


def bench_inference(
    json_out: Annotated[bool, typer.Option("--json", help="Print figures as JSON.")] = False,
    concurrency: Annotated[
        list[int] | None, typer.Option(help="Concurrency levels (repeat).")
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, help="Requests per run = max(concurrency, 4) × rounds.")
    ] = 1,
    repeats: Annotated[
        int,
        typer.Option(
            min=1, help="Alternating raw/ours runs per level (--router: runs per gateway)."
        ),
    ] = 3,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 32,
    turns: Annotated[
        int, typer.Option(min=2, max=20, help="Turns in the prefix-reuse conversation.")
    ] = 4,
    model: Annotated[
        Path | None, typer.Option(help="Local model folder (default: tiny random MoE).")
    ] = None,
    sglang_url: Annotated[
        str | None, typer.Option(envvar="SGLANG_URL", help="Also bench this SGLang server.")
    ] = None,
    server_thread: Annotated[
        bool, typer.Option(help="Run the local server in a thread (quick; overhead pessimistic).")
    ] = False,
    router: Annotated[
        bool,
        typer.Option(
            help="Instead: chats whose retrieved posts change every turn, on 2 workers behind "
            "smg and behind sglang-router 0.3.2 (if installed), side by side."
        ),
    ] = False,
    conversations: Annotated[
        int, typer.Option(min=1, max=256, help="With --router: conversations in flight.")
    ] = 8,
    chat_turns: Annotated[int, typer.Option(min=2, max=20, help="With --router: turns each.")] = 4,
    posts_per_turn: Annotated[
        int, typer.Option(min=0, max=50, help="With --router: new feed posts in each turn.")
    ] = 8,
    worker_threads: Annotated[
        int, typer.Option(min=1, max=64, help="With --router: torch threads per worker.")
    ] = 1,
) -> None:
    """Time to first token, tokens/s at concurrency 1/8/32, client overhead, prefix reuse
    (`--router`: smg vs sglang-router, TTFT p50/p99, tokens/s, cached share from turn 2)."""
    if router:
        _bench_module("gateway").main(
            as_json=json_out,
            conversations=conversations,
            turns=chat_turns,
            max_tokens=max_tokens,
            repeats=repeats,
            posts_per_turn=posts_per_turn,
            model_path=model,
            worker_threads=worker_threads,
        )
        return
    _bench_module().main(
        as_json=json_out,
        levels=concurrency or [1, 8, 32],
        rounds=rounds,
        repeats=repeats,
        max_tokens=max_tokens,
        turns=turns,
        model_path=model,
        sglang_url=sglang_url,
        server_thread=server_thread,
    )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add `serve-model` to `app` and `inference` to the `bench` sub-app."""
    app.command("serve-model")(serve_model)
    bench_app.command("inference")(bench_inference)
