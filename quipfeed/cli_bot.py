"""CLI commands for the conversation layer: `ask`, `chat` and `eval chat`.

`quipfeed/cli.py` calls `register(app, eval_app)`. This module is the composition root for `bot`:
it builds the engine from `model.url` / `model.path`, the search from the running daemon or the
local store, and Redis from `redis.url` or the embedded server.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

# The bot and its runtime load only when a command runs: `quipfeed --help` and the commands
# of other parts must not pay for them.
if TYPE_CHECKING:
    from bot.chat import Chat, ChatConfig
    from bot.models import TurnResult
    from bot.search import PostSearch

ModelUrl = Annotated[
    str | None, typer.Option("--model-url", help="OpenAI-compatible server (default: model.url).")
]
ModelPath = Annotated[
    Path | None, typer.Option("--model-path", help="Local model folder (default: model.path).")
]
PersonaOpt = Annotated[str | None, typer.Option("--persona", "-p", help="quip, plain, wire, …")]
PersonasDir = Annotated[
    list[Path] | None,
    typer.Option("--personas-dir", help="A folder of your own persona files (repeatable)."),
]
UserOpt = Annotated[str | None, typer.Option("--user", help="Whose conversations (default: you).")]
NowOpt = Annotated[
    str | None, typer.Option("--now", help="Answer as of this time (replayed data): RFC 3339.")
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Only posts newer than this: 6h, 2d.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option("--max-tokens", min=1, help="Cap on reply tokens (default: persona's)."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A quipfeed.toml.")]


class Refused(Exception):
    """Setup cannot go on; the message tells the user what to change."""


def _fail(message: str, code: int = 2) -> NoReturn:
    from quipfeed.logs import redact

    # A message may quote a configured URL; its password never reaches the terminal.
    typer.secho(f"error: {redact(message)}", fg="red", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None) -> Any:
    from quipfeed.cli import settings_from

    return settings_from(config)


async def open_engine(settings: Any, url: str | None, path: Path | None) -> Any:
    """The `Engine` for `--model-url`/`--model-path`, else `model.url`/`model.path`."""
    from inference.errors import EngineUnavailable
    from quipfeed import runtime

    try:
        return await runtime.open_engine(settings, url=url, path=str(path) if path else None)
    except (ValueError, EngineUnavailable) as e:
        raise Refused(str(e)) from e


@contextlib.asynccontextmanager
async def open_search(settings: Any) -> AsyncIterator[PostSearch]:
    """The running daemon's search when one owns the store, else the store opened here. When
    neither can be reached (the shard held by another process, Qdrant down), chat still works:
    turns answer without the feed and say so, and each turn looks for the store again."""
    import logging

    from bot.search import SearchUnavailable
    from quipfeed.feed_search import ReopeningSearch

    search = ReopeningSearch(settings, half_life=timedelta(hours=settings.search.half_life_hours))
    try:
        await search.connect()
    except SearchUnavailable as e:
        logging.getLogger(__name__).warning(
            "the post store is unavailable; answering without the feed until it is back: %s", e
        )
    try:
        yield search
    finally:
        await search.aclose()


@contextlib.asynccontextmanager
async def open_chat(
    settings: Any,
    *,
    model_url: str | None,
    model_path: Path | None,
    personas_dirs: list[Path] | None,
    persona: str | None = None,
    config: ChatConfig | None = None,
) -> AsyncIterator[Chat]:
    """A `Chat` on the configured engine, search and Redis; `Refused` says what is missing."""
    import redis.asyncio as aioredis

    from bot.chat import Chat
    from bot.persona import PersonaError, load_personas
    from quipfeed.runtime import redis_url

    try:
        personas = load_personas(_persona_dirs(settings, personas_dirs))
    except PersonaError as e:
        raise Refused(f"bad persona file: {e}") from e
    if persona is not None and persona not in personas:
        raise Refused(f"no persona {persona!r}; known: {', '.join(sorted(personas))}")
    engine = await open_engine(settings, model_url, model_path)
    try:
        async with open_search(settings) as search:
            with redis_url(settings) as url:
                client = aioredis.from_url(url)
                try:
                    yield Chat(client, engine, search, personas, config)
                finally:
                    await client.aclose()
    finally:
        await engine.aclose()


def _persona_dirs(settings: Any, given: list[Path] | None) -> list[Path]:
    # Until settings carry a `bot.personas_dir`, a `personas/` folder in the data dir is read.
    default = settings.data_dir / "personas"
    return [*([default] if default.is_dir() else []), *(given or [])]


def _chat_config(since: str | None, max_tokens: int | None) -> ChatConfig:
    from bot.chat import ChatConfig
    from quipfeed.durations import parse_span

    try:
        window = parse_span(since) if since else None
    except ValueError as e:
        raise Refused(f"--since: {e}") from e
    return ChatConfig(since=window, max_reply_tokens=max_tokens)


def _print_result(result: TurnResult) -> None:
    typer.echo()
    if result.sources:
        typer.echo("\nsources:")
        for s in result.sources:
            post = s.post
            when = post.created_at.strftime("%Y-%m-%d %H:%M")
            typer.echo(f"  [{s.number}] @{post.author or '?'} · {when} · {post.url or post.id}")
    if result.suggestions:
        typer.echo("\nyou could ask:")
        for q in result.suggestions:
            typer.echo(f"  - {q}")


async def _stream(events: AsyncIterator[Any], echo: bool) -> TurnResult:
    from bot.chat import Delta, Done, Notice

    result: TurnResult | None = None
    async for event in events:
        if isinstance(event, Notice):
            # On stderr even with --json (whose document carries it as "notice" too), so a
            # person at the terminal always sees it; stdout stays the answer.
            typer.secho(f"note: {event.text}", fg="yellow", err=True)
        elif isinstance(event, Delta) and echo:
            typer.echo(event.text, nl=False)
        elif isinstance(event, Done):
            result = event.result
    assert result is not None
    return result


def _runtime_errors() -> tuple[type[BaseException], ...]:
    from bot.limits import LimitExceeded
    from bot.search import SearchUnavailable
    from bot.store import ConversationBusy, ConversationNotFound, MessageNotFound
    from inference.errors import InferenceError

    return (
        LimitExceeded,
        ConversationBusy,
        ConversationNotFound,
        MessageNotFound,
        InferenceError,
        SearchUnavailable,
        KeyError,
        ValueError,
    )


def ask(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    persona: PersonaOpt = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Continue this conversation.")
    ] = None,
    as_json: JsonOpt = False,
    user: UserOpt = None,
    now: NowOpt = None,
    since: SinceOpt = None,
    model_url: ModelUrl = None,
    model_path: ModelPath = None,
    personas_dir: PersonasDir = None,
    max_tokens: MaxTokensOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ask one question: a grounded, streamed reply with its sources and follow-up suggestions."""
    settings = _settings(config)
    who = user or getpass.getuser()

    async def go() -> TurnResult:
        from quipfeed.durations import parse_instant

        as_of = parse_instant(now) if now else None
        async with open_chat(
            settings,
            model_url=model_url,
            model_path=model_path,
            personas_dirs=personas_dir,
            persona=persona,
            config=_chat_config(since, max_tokens),
        ) as chat:
            cid = conversation or (await chat.new_conversation(who, persona=persona)).id
            events = chat.ask(cid, who, question, persona=persona, as_of=as_of)
            return await _stream(events, echo=not as_json)

    try:
        import asyncio

        result = asyncio.run(go())
    except Refused as e:
        _fail(str(e))
    except _runtime_errors() as e:
        _fail(str(e).strip("'\""), 1)
    if as_json:
        typer.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
    else:
        _print_result(result)
        typer.secho(f"\nconversation {result.conversation_id}", dim=True, err=True)


CHAT_HELP = """commands:
  /regen              a new version of the last answer
  /versions           the versions of the last answer (* = selected)
  /prev, /next        switch to the previous / next version of the last answer
  /edit TEXT          replace the last answer with your own text (a new version)
  /editq TEXT         ask TEXT instead of the last question (a new version)
  /new                start a new conversation      /list    your conversations
  /open ID            continue conversation ID      /rename TITLE
  /delete             delete this conversation      /export md|json
  /up [NOTE], /down [NOTE]   rate the last answer
  /persona NAME       answer in another persona     /quit"""


async def _repl(chat: Chat, who: str, persona: str | None, cid: str | None, as_of: Any) -> None:
    import asyncio

    if cid is None:
        cid = (await chat.new_conversation(who, persona=persona)).id
    else:
        await chat.path(cid, who)
    typer.echo(f"conversation {cid} — /help for commands, /quit to leave")
    while True:
        try:
            line = (await asyncio.to_thread(input, "you> ")).strip()
        except EOFError:
            return
        if not line:
            continue
        cmd, _, arg = line.partition(" ") if line.startswith("/") else ("", "", line)
        try:
            cid = await _command(chat, who, cid, cmd, arg.strip(), persona, as_of)
        except _QuitChat:
            return
        except _runtime_errors() as e:
            typer.secho(f"error: {str(e).strip(chr(39))}", fg="red", err=True)


class _QuitChat(Exception):
    pass


async def _command(
    chat: Chat, who: str, cid: str, cmd: str, arg: str, persona: str | None, as_of: Any
) -> str:
    """Run one line of the chat; returns the conversation to continue."""
    say = typer.echo

    async def answer(events: AsyncIterator[Any]) -> None:
        typer.echo("quip> ", nl=False)
        _print_result(await _stream(events, echo=True))

    async def last(role: str) -> Any:
        msgs = [m for m in await chat.path(cid, who) if m.role == role]
        if not msgs:
            raise ValueError("nothing to act on yet")
        return msgs[-1]

    if cmd == "":
        await answer(chat.ask(cid, who, arg, persona=persona, as_of=as_of))
    elif cmd in ("/quit", "/exit"):
        raise _QuitChat
    elif cmd == "/help":
        say(CHAT_HELP)
    elif cmd == "/regen":
        await answer(chat.regenerate(cid, who, persona=persona))
    elif cmd in ("/versions", "/prev", "/next"):
        current = await last("assistant")
        versions = await chat.versions(cid, who, current.id)
        at = [v.id for v in versions].index(current.id)
        if cmd != "/versions":
            at = max(0, min(len(versions) - 1, at + (1 if cmd == "/next" else -1)))
            await chat.select(cid, who, versions[at].id)
        for i, v in enumerate(versions):
            say(f"{'*' if i == at else ' '} {i + 1}/{len(versions)} {v.id}: {v.content[:70]}")
    elif cmd == "/edit":
        await chat.edit_answer(cid, who, (await last("assistant")).id, arg)
        say("answer replaced (new version)")
    elif cmd == "/editq":
        await answer(
            chat.edit_question(cid, who, (await last("user")).id, arg, persona=persona, as_of=as_of)
        )
    elif cmd == "/new":
        cid = (await chat.new_conversation(who, persona=persona)).id
        say(f"conversation {cid}")
    elif cmd == "/list":
        for c in await chat.conversations(who):
            say(f"{'*' if c.id == cid else ' '} {c.id}  {c.updated_at:%Y-%m-%d %H:%M}  {c.title}")
    elif cmd == "/open":
        await chat.path(arg, who)
        cid = arg
        for m in await chat.path(cid, who):
            say(f"{'you' if m.role == 'user' else 'quip'}> {m.content}")
    elif cmd == "/rename":
        say(f"renamed: {(await chat.rename(cid, who, arg)).title}")
    elif cmd == "/delete":
        await chat.delete(cid, who)
        cid = (await chat.new_conversation(who, persona=persona)).id
        say(f"deleted; new conversation {cid}")
    elif cmd == "/export":
        out = await chat.export(cid, who, "json" if arg == "json" else "markdown")
        say(out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, indent=2))
    elif cmd in ("/up", "/down"):
        await chat.feedback(cid, who, (await last("assistant")).id, cmd[1:], arg)
        say("thanks, noted")
    elif cmd == "/persona":
        if arg not in chat.personas:
            raise ValueError(f"no persona {arg!r}; known: {', '.join(sorted(chat.personas))}")
        persona = arg
        info = await chat.store.get(cid, who)
        info.persona = arg
        await chat.store.save_info(info)
        say(f"now answering as {arg}")
    else:
        say(f"unknown command {cmd}; /help lists them")
    return cid


def chat(
    persona: PersonaOpt = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Continue this conversation.")
    ] = None,
    user: UserOpt = None,
    now: NowOpt = None,
    since: SinceOpt = None,
    model_url: ModelUrl = None,
    model_path: ModelPath = None,
    personas_dir: PersonasDir = None,
    max_tokens: MaxTokensOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A conversation in the terminal: regenerate, switch versions, edit, start anew."""
    settings = _settings(config)
    who = user or getpass.getuser()

    async def go() -> None:
        from quipfeed.durations import parse_instant

        as_of = parse_instant(now) if now else None
        async with open_chat(
            settings,
            model_url=model_url,
            model_path=model_path,
            personas_dirs=personas_dir,
            persona=persona,
            config=_chat_config(since, max_tokens),
        ) as bot:
            await _repl(bot, who, persona, conversation, as_of)

    try:
        import asyncio

        asyncio.run(go())
    except Refused as e:
        _fail(str(e))
    except _runtime_errors() as e:
        _fail(str(e).strip("'\""), 1)


def eval_chat(
    model_url: ModelUrl = None,
    model_path: ModelPath = None,
    tiny: Annotated[bool, typer.Option(help="Use a freshly built tiny random model (CI).")] = False,
    judge_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible judge for persona adherence.")
    ] = None,
    persona: Annotated[str, typer.Option(help="Persona to evaluate.")] = "quip",
    posts: Annotated[Path | None, typer.Option(help="Feed to replay (JSON Lines).")] = None,
    questions: Annotated[Path | None, typer.Option(help="Questions: {query, now} lines.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Feed questions to ask.")] = 12,
    max_posts: Annotated[int, typer.Option(min=1, help="Posts of the feed to index.")] = 100_000,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Cap on reply tokens.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Grounding figures of the chat over a replayed feed: citation precision, cited claims,
    refusal when nothing matches, length, persona adherence (with --judge-url)."""
    import retrieval.devset
    from quipfeed.runtime import NO_MODEL_CONFIGURED as NO_MODEL

    settings = _settings(config)
    devset = Path(retrieval.devset.__file__).parent
    posts = posts or devset / "posts.jsonl"
    questions = questions or devset / "sample_queries.jsonl"
    for path in (posts, questions):
        if not path.is_file():
            _fail(f"file not found: {path}")
    if not tiny and not (model_url or model_path or settings.model.url or settings.model.path):
        _fail(NO_MODEL + "\n(or --tiny for the plumbing check)")
    try:
        import asyncio

        report = asyncio.run(
            _run_eval(
                settings,
                model_url,
                model_path,
                tiny,
                judge_url,
                persona,
                posts,
                questions,
                limit,
                max_posts,
                max_tokens,
            )
        )
    except Refused as e:
        _fail(str(e))
    except _runtime_errors() as e:
        _fail(str(e).strip("'\""), 1)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        return
    for key, value in report.items():
        if key != "rows":
            shown = f"{value:.3f}" if isinstance(value, float) else value
            typer.echo(f"{key}: {shown}")


async def _run_eval(
    settings: Any,
    model_url: str | None,
    model_path: Path | None,
    tiny: bool,
    judge_url: str | None,
    persona: str,
    posts_path: Path,
    questions_path: Path,
    limit: int,
    max_posts: int,
    max_tokens: int | None,
) -> dict[str, Any]:
    import asyncio

    import redis.asyncio as aioredis

    from bot.chat import Chat, ChatConfig
    from bot.evaluation import evaluate_chat, load_questions
    from bot.limits import Limits
    from bot.persona import load_personas
    from bot.search import LocalSearch
    from quipfeed.embedded_redis import EmbeddedRedis
    from quipfeed.runtime import embedder_for
    from retrieval.edge_store import EdgeStore
    from retrieval.post import Post
    from retrieval.search import Searcher

    with tempfile.TemporaryDirectory(prefix="quipfeed-eval-chat-") as tmp:
        work = Path(tmp)
        lines = (await asyncio.to_thread(posts_path.read_text)).splitlines()[:max_posts]
        feed = [Post.model_validate_json(line) for line in lines if line.strip()]
        if not feed:
            raise Refused(f"no posts in {posts_path}")
        if tiny:
            from inference.local import LocalEngine
            from inference.tiny_model import build_tiny_moe

            folder = build_tiny_moe(work / "tiny", context_window=8192)
            engine: Any = await LocalEngine.aload(folder, device="cpu")
            max_tokens = max_tokens or 48
        else:
            engine = await open_engine(settings, model_url, model_path)
        judge = await open_engine(settings, judge_url, None) if judge_url else None
        embedder = await asyncio.to_thread(embedder_for, settings)
        store = EdgeStore(work / "shard", embedder.dim)
        redis_server = EmbeddedRedis(work / "redis")
        client = aioredis.from_url(redis_server.ensure_running())
        try:
            vectors = await asyncio.to_thread(embedder.embed, [p.text for p in feed])
            store.upsert(feed, vectors.tolist())
            personas = load_personas(_persona_dirs(settings, None))
            if persona not in personas:
                raise Refused(f"no persona {persona!r}; known: {', '.join(sorted(personas))}")
            config = ChatConfig(
                limits=Limits(messages_per_minute=0, tokens_per_day=0),
                max_reply_tokens=max_tokens,
                k=settings.search.k,
            )
            chat_ = Chat(client, engine, LocalSearch(Searcher(store, embedder)), personas, config)
            earliest = min(p.created_at for p in feed)
            asked = load_questions(questions_path, limit=limit, earliest=earliest)
            return await evaluate_chat(chat_, asked, persona=persona, judge=judge)
        finally:
            await client.aclose()
            redis_server.stop()
            store.close()
            await engine.aclose()
            if judge is not None:
                await judge.aclose()


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add `ask` and `chat` to `app`, and `chat` to `eval_app`."""
    app.command("ask")(ask)
    app.command("chat")(chat)
    eval_app.command("chat")(eval_chat)


__all__ = ["open_chat", "open_engine", "open_search", "register"]
