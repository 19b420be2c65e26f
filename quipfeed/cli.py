"""`quipfeed`: the product's menu. Each command is a few lines that call into a package."""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from quipfeed import cli_bot, cli_discord, cli_inference, cli_web
from quipfeed.durations import parse_instant, parse_span

# Nothing heavy at the top of the CLI (settings, Redis, the store, web or model libraries):
# each command imports what it uses, so `--help` and the everyday commands start fast.
if TYPE_CHECKING:
    from quipfeed.settings import Settings

# Before any model library is imported: no hub traffic, no progress bars or chatter from
# model loading in a product's output (our own progress display says what is going on).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)

app = typer.Typer(
    help="quipfeed: a chatbot that knows what the public feed is saying right now.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ingest_app = typer.Typer(help="Stream public posts into the index (the ingest daemon).")
eval_app = typer.Typer(help="Measure quality on labelled data.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed; prints figures (and --json).", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="A quipfeed.toml (default: ./quipfeed.toml).")
]


def fail(message: str, code: int = 2) -> NoReturn:
    from quipfeed.logs import redact

    # A message may quote a configured URL; its password never reaches the terminal.
    typer.secho(f"error: {redact(message)}", fg="red", err=True)
    raise typer.Exit(code)


def settings_from(config: Path | None) -> Settings:
    from pydantic import ValidationError

    from quipfeed.settings import load_settings

    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValidationError, ValueError) as exc:
        fail(f"bad settings: {exc}")
    from quipfeed import logs

    logs.configure(os.environ.get("QUIPFEED_LOG_LEVEL", "WARNING"))
    return settings


def emit(data: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else human)


@ingest_app.callback(invoke_without_command=True)
def ingest(
    ctx: typer.Context,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            "-s",
            help="jetstream:wss://…, mastodon:https://host, rss:https://…, jsonl:PATH, or "
            "`sample`. Repeat for several.",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option(help="Drain finite sources, wait until every post is indexed, exit.")
    ] = False,
    speed: Annotated[
        float,
        typer.Option(min=0, help="jsonl replay speed: 0 = as fast as possible, 1 = real time."),
    ] = 0.0,
    workers: Annotated[int | None, typer.Option(min=1, help="Indexer workers.")] = None,
    indexer_only: Annotated[
        bool,
        typer.Option(
            "--indexer-only",
            help="Run indexer workers and no sources (scale out: more consumers, one group).",
        ),
    ] = False,
    host: Annotated[str | None, typer.Option(help="Health/metrics/search address.")] = None,
    port: Annotated[int | None, typer.Option(help="Its port (0: any free one).")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run the ingest daemon: sources → Redis Streams bus → indexers → Qdrant."""
    if ctx.invoked_subcommand is not None:
        return
    from ingest.sources import SourceSpecError
    from quipfeed import progress as progress_display
    from quipfeed.runtime import open_sources, run_ingest

    settings = settings_from(config)
    if workers:
        settings.ingest.workers = workers
    try:
        sources = [] if indexer_only else open_sources(source or settings.ingest.sources, speed)
    except (SourceSpecError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if once and not all(s.finite for s in sources):
        fail(
            "--once needs sources that end (jsonl:, rss:); "
            + ", ".join(s.spec for s in sources if not s.finite)
            + " never do"
        )
    if port is None:
        # A one-shot run needs no fixed port (daemon.json says which it got), unless the
        # settings name one: then two runs side by side never collide.
        port = (
            0 if once and "port" not in settings.ingest.model_fields_set else settings.ingest.port
        )
    listener = _listen(host or settings.ingest.host, port, "--port")
    show = progress_display.ProgressLine(enabled=(not as_json and sys.stderr.isatty()) or once)
    try:
        import asyncio

        report = asyncio.run(
            run_ingest(
                settings,
                sources,
                once=once,
                listener=listener,
                on_progress=show.update if not as_json else None,
            )
        )
    except Exception as exc:
        from retrieval.store import StoreUnavailable

        if isinstance(exc, StoreUnavailable | OSError):
            fail(str(exc))
        raise
    show.close()
    p = report["progress"]
    emit(
        report,
        as_json,
        f"indexed {p['indexed']} posts from {p['events']} events; "
        f"{p['dead']} dead letters; bus lag {p['lag']}",
    )


def _listen(host: str, port: int, flag: str) -> socket.socket:
    """The serving socket, opened before anything slow loads; a taken port is one line."""
    from quipfeed.ports import PortUnavailable, listen

    try:
        return listen(host, port, flag)
    except PortUnavailable as exc:
        fail(str(exc))


@app.command()
def up(
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Feeds (default: settings, else the sample feed)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to serve on.")] = None,
    port: Annotated[int | None, typer.Option(help="Web chat, widget and API port.")] = None,
    ingest_port: Annotated[
        int | None, typer.Option(help="Ingest health/metrics port (0: any free one).")
    ] = None,
    tiny: Annotated[
        bool, typer.Option(help="Answer with a tiny random model (a plumbing demo: gibberish).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Everything on one machine: ingest, the web chat and widget, the Discord bot with a token."""
    from ingest.sources import SourceSpecError
    from quipfeed.runtime import open_sources, sample_spec
    from quipfeed.up import run_up

    settings = settings_from(config)
    specs = source or settings.ingest.sources or [sample_spec()]
    try:
        sources = open_sources(specs, 0.0)
    except (SourceSpecError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    host = host or settings.web.host
    web_listener = _listen(host, settings.web.port if port is None else port, "--port")
    ingest_listener = _listen(
        host, settings.ingest.port if ingest_port is None else ingest_port, "--ingest-port"
    )
    import asyncio

    try:
        asyncio.run(
            run_up(
                settings,
                sources,
                web_listener=web_listener,
                ingest_listener=ingest_listener,
                tiny=tiny,
            )
        )
    except Exception as exc:
        from retrieval.store import StoreUnavailable

        if isinstance(exc, StoreUnavailable | OSError | ValueError):
            fail(str(exc))
        raise


@ingest_app.command("dead-letters")
def dead_letters(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List events that could not be ingested, newest first, with the reason."""
    from quipfeed.queries import dead_letters as fetch

    letters = fetch(settings_from(config), limit)
    lines = [f"{d['entry_id']}  {d['source']}  {d['reason']}: {d['detail'][:100]}" for d in letters]
    emit(letters, as_json, "\n".join(lines) or "no dead letters")


@app.command()
def stats(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Posts indexed by source, oldest and newest, dead letters, bus lag."""
    from quipfeed.queries import stats as fetch
    from retrieval.store import StoreUnavailable

    try:
        data = fetch(settings_from(config))
    except StoreUnavailable as exc:
        fail(str(exc))
    human = [f"posts indexed: {data['posts']}"]
    human += [f"  {src}: {n}" for src, n in data["by_source"].items()]
    human += [
        f"oldest: {data['oldest']}",
        f"newest: {data['newest']}",
        f"dead letters: {data['dead_letters']}",
        f"bus lag: {data['bus_lag']}",
    ]
    emit(data, as_json, "\n".join(human))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option(min=1, max=200, help="How many posts.")] = 10,
    since: Annotated[str | None, typer.Option(help="Only posts newer than this: 6h, 2d.")] = None,
    now: Annotated[
        str | None, typer.Option(help="As of this time (for replayed data): RFC 3339.")
    ] = None,
    half_life: Annotated[
        str | None,
        typer.Option(help="Favour recent posts: one this old counts half (default: settings)."),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The best recent posts for a query: hybrid dense + BM25, favouring recent posts.

    The query may say when and whom: "today", "last 2 hours", "this week", "since the
    keynote", from:handle, #tag, lang:xx, "a quoted phrase"."""
    from quipfeed.queries import SearchRefused
    from quipfeed.queries import search as run_search
    from retrieval.store import StoreUnavailable

    notes: list[str] = []
    try:
        settings = settings_from(config)
        window: timedelta | None = parse_span(since) if since else None
        as_of = parse_instant(now) if now else None
        decay = (
            parse_span(half_life) if half_life else timedelta(hours=settings.search.half_life_hours)
        )
        hits = run_search(
            settings, query, k=k, since=window, as_of=as_of, half_life=decay, notes=notes
        )
    except (ValueError, SearchRefused, StoreUnavailable) as exc:
        fail(str(exc))
    lines = list(notes)
    for i, h in enumerate(hits, 1):
        post = h["post"]
        text = " ".join(post["text"].split())[:160]
        lines.append(f"[{i}] {post.get('author') or '?'} · {post['created_at']} · {h['score']:.3f}")
        lines.append(f"    {text}")
        if post.get("url"):
            lines.append(f"    {post['url']}")
        for parent in h.get("context", []):
            quoted = " ".join(parent["text"].split())[:120]
            lines.append(f"    ↳ in reply to {parent.get('author') or '?'}: {quoted}")
    emit(hits, as_json, "\n".join(lines) or "no posts matched")


@app.command()
def trending(
    window: Annotated[str, typer.Option(help="How far back: 15m, 1h, 6h, 1d.")] = "1h",
    now: Annotated[
        str | None, typer.Option(help="As of this time (for replayed data): RFC 3339.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Topics whose rate in the window stands out against their baseline."""
    from quipfeed.queries import trending as fetch

    try:
        span = parse_span(window)
        as_of = parse_instant(now) if now else None
        trends = fetch(settings_from(config), span, as_of, limit)
    except ValueError as exc:
        fail(str(exc))
    lines = []
    for i, t in enumerate(trends, 1):
        growth = "new" if t["growth"] is None else f"×{t['growth']:.1f}"
        lines.append(f"{i:>2}. {t['label']}  {t['count']} posts ({growth} vs baseline)")
        for post in t["posts"][:2]:
            text = " ".join(post["text"].split())[:110]
            lines.append(f"      {post.get('author') or '?'}: {text}")
    emit(trends, as_json, "\n".join(lines) or f"nothing stands out in the last {window}")


@eval_app.command("retrieval")
def eval_retrieval(
    posts: Annotated[
        Path | None,
        typer.Option(
            help="Posts (JSON Lines). Default: the full dev set when built, else the sample."
        ),
    ] = None,
    queries: Annotated[Path | None, typer.Option(help="Labelled queries (JSON Lines).")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """nDCG@10, recall@10 and MRR per split (tune/test), kind and language, dense beside each."""
    import tempfile

    import platformdirs

    from quipfeed.progress import StageProgress
    from quipfeed.runtime import embedder_for
    from retrieval.eval_report import render
    from retrieval.evaluation import evaluate, pick_devset

    settings = settings_from(config)
    posts, queries, note = pick_devset(posts, queries)
    for path in (posts, queries):
        if not path.is_file():
            fail(f"file not found: {path}")
    if note and not as_json:
        typer.echo(note, err=True)
    bar = StageProgress(enabled=not as_json)
    cache = Path(platformdirs.user_cache_dir("quipfeed", appauthor=False)) / "eval-vectors"
    with tempfile.TemporaryDirectory(prefix="quipfeed-eval-") as work:
        try:
            result = evaluate(
                posts,
                queries,
                embedder_for(settings),
                Path(work),
                cache_dir=cache,
                progress=bar.update,
            )
        except ValueError as exc:
            fail(str(exc))
        finally:
            bar.close()
    emit(result, as_json, render(result))


@bench_app.command("retrieval")
def bench_retrieval(
    posts: Annotated[
        str, typer.Option(help="Index sizes, comma-separated (e.g. 100000,1000000).")
    ] = "100000",
    queries: Annotated[int, typer.Option(min=1, max=10_000, help="Queries per measurement.")] = 200,
    embedder: Annotated[
        str, typer.Option(help="Embedder kind that fills the store (static, multilingual-e5, …).")
    ] = "static",
    as_json: JsonOpt = False,
) -> None:
    """Query latency p50/p99 (store only and full pipeline), HNSW recall vs exact, memory."""
    try:
        sizes = [int(x) for x in posts.split(",") if x.strip()]
    except ValueError:
        fail(f"--posts takes whole numbers separated by commas, not {posts!r}")
    if not sizes or any(n < 1 for n in sizes):
        fail("--posts needs at least one positive size")
    from retrieval.embedder import EMBEDDER_KINDS

    if embedder not in EMBEDDER_KINDS:
        fail(f"unknown embedder {embedder!r}; use one of {', '.join(EMBEDDER_KINDS)}")
    bench = _bench("retrieval")
    result = bench.run(sizes, queries=queries, embedder_kind=embedder)
    emit(result, as_json, bench.human(result))


@bench_app.command("embedders")
def bench_embedders(
    kinds: Annotated[
        str,
        typer.Option(
            help="Comma-separated: minilm, minilm-int8, static-minilm, e5, e5-int8, "
            "static-e5, or all."
        ),
    ] = "minilm,e5",
    speed: Annotated[bool, typer.Option("--speed", help="Only texts/s, load time, RSS.")] = False,
    quality: Annotated[
        bool, typer.Option("--quality", help="Only retrieval quality (nDCG@10 by language).")
    ] = False,
    posts: Annotated[Path | None, typer.Option(help="Posts JSON Lines (default: sample).")] = None,
    queries: Annotated[
        Path | None, typer.Option(help="Labelled queries JSON Lines (default: sample).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Only queries of this split (tune).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="shared/data folder with real posts to time.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Embedders side by side: texts/s at 1 and 2 threads, load, RSS; dense nDCG@10 by language."""
    argv = ["--kinds", kinds]
    argv += ["--speed"] if speed else []
    argv += ["--quality"] if quality else []
    for flag, value in (("--posts", posts), ("--queries", queries), ("--data", data)):
        if value is not None:
            if not value.exists():
                fail(f"{flag.lstrip('-')} not found: {value}")
            argv += [flag, str(value)]
    argv += ["--split", split] if split else []
    argv += ["--json"] if as_json else []
    bench = _bench("embedders")
    try:
        raise typer.Exit(bench.main(argv))
    except SystemExit as exc:  # argparse reports a bad option and exits 2
        raise typer.Exit(int(exc.code or 0)) from None


def _bench(name: str) -> Any:
    # `bench/` sits at the repo root, next to the packages, and is not installed: when the
    # console script runs from elsewhere, put the checkout's root on the path.
    import importlib

    root = Path(__file__).resolve().parents[1]
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError:
        if not (root / "bench" / f"{name}.py").is_file():
            fail(f"benchmark code not found at {root / 'bench'}")
        sys.path.insert(0, str(root))
        return importlib.import_module(f"bench.{name}")


@bench_app.command("ingest")
def bench_ingest(
    posts: Annotated[int, typer.Option(help="Posts to replay per measurement.")] = 2000,
    rate: Annotated[
        float, typer.Option(help="Offered rate (posts/s) for the freshness run.")
    ] = 50.0,
    embedder: Annotated[
        str | None, typer.Option(help="sentence-transformers or static (default: settings).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=4096, help="Indexer batch (default: settings).")
    ] = None,
    sync_interval_ms: Annotated[
        int | None,
        typer.Option(min=0, max=60_000, help="Group commit interval; 0 syncs every batch."),
    ] = None,
    stages: Annotated[
        bool, typer.Option("--stages", help="Also cost each stage alone, in CPU µs per post.")
    ] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Sustained posts/s, freshness p50/p99 at an offered rate, and the raw embedder's texts/s."""
    bench = _bench("ingest")
    settings = settings_from(config)
    if embedder:
        settings.embedder.kind = embedder  # type: ignore[assignment]
    if batch_size is not None:
        settings.ingest.batch_size = batch_size
    if sync_interval_ms is not None:
        settings.ingest.sync_interval_ms = sync_interval_ms
    import asyncio

    result = asyncio.run(bench.run(settings, posts=posts, rate=rate))
    if stages:
        per_stage = _bench("ingest_stages")
        result["stages"] = asyncio.run(per_stage.run(posts, settings.ingest.batch_size))
    emit(result, as_json, "\n".join(f"{k}: {v}" for k, v in result.items()))


@bench_app.command("cli")
def bench_cli(
    runs: Annotated[int, typer.Option(min=1, max=100, help="Runs of each command.")] = 5,
    search: Annotated[
        bool, typer.Option(help="Also time stats and search on a data dir with posts.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Everyday commands as whole processes: --help, stats, trending, dead letters, search with
    the model cold, stopping the embedded Redis (min/median/max seconds, against the goals)."""
    bench = _bench("cli")
    result = bench.run(runs, search=search)
    emit(result, as_json, bench.human(result))


# Each part's commands live beside its composition code; this file only lists them.
cli_bot.register(app, eval_app)
cli_inference.register(app, bench_app)
cli_web.register(app, bench_app)
cli_discord.register(app)

if __name__ == "__main__":
    app()
