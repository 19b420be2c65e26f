"""The HTTP API, the widget and the demo page, as one FastAPI app over a `ChatService`.

Auth: `POST /v1/session` gives a browser an anonymous signed token; server-to-server callers
send an API key (`X-API-Key`, or `Authorization: Bearer` as OpenAI clients do). Either way the
caller gets an owner id, and conversations are visible only to their owner.

Turns stream as Server-Sent Events: `turn` (ids), `token`…, `citations`, `suggestions`, `done`
(or `error`/`stopped`), each with an id `<turn>.<n>`. A dropped stream resumes with
`GET /v1/turns/{turn}/events` and `Last-Event-ID`, replaying what was missed.

Every response carries `X-Request-ID`: the caller's, if it sent a valid one (1–64 of
`A-Za-z0-9._:-`), else a fresh one. The id is current for the whole turn (its streaming task
included), so the web, retrieval and model-server log lines of one turn share it.
`/metrics` serves Prometheus metrics (`bot.web.metrics`); `/healthz` says the app is up.
"""

import inspect
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from bot.web.body_limit import BodyLimit
from bot.web.limits import RateLimiter
from bot.web.metrics import HttpMetricsMiddleware, WebMetrics
from bot.web.openai_facade import add_openai_routes
from bot.web.options import WebOptions
from bot.web.runs import Runs, TooManyRuns
from bot.web.service import (
    BadInput,
    Busy,
    ChatService,
    ConversationSummary,
    ConversationView,
    Limited,
    NotFound,
    PersonaCard,
    Rating,
    TrendItem,
    TurnEvent,
    Unavailable,
)
from bot.web.service import CitationCard as CitationCardModel
from bot.web.sessions import ApiKeys, BadToken, Identity, SessionSigner
from bot.web.sse import aclose, produce, stream
from inference.request_id import HEADER as REQUEST_ID_HEADER
from inference.request_id import RequestIdMiddleware

STATIC = Path(__file__).parent / "static"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class ErrorBody(BaseModel):
    error: dict[str, str]


class SessionOut(BaseModel):
    token: str
    user: str
    expires_at: int


class NewConversation(BaseModel):
    persona: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)


class ConversationPatch(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    persona: str | None = Field(default=None, max_length=32)


class NewMessage(BaseModel):
    text: str = Field(min_length=1, description="The question.")
    persona: str | None = Field(default=None, max_length=32)


class EditMessage(BaseModel):
    text: str = Field(min_length=1, description="The new text (Markdown).")


class FeedbackIn(BaseModel):
    rating: Rating
    note: str = Field(default="", max_length=2_000)


class Ok(BaseModel):
    ok: bool = True


def client_ip(request: Request, options: WebOptions) -> str:
    if options.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def create_app(
    service: ChatService, options: WebOptions, metrics: WebMetrics | None = None
) -> FastAPI:
    """The app. `service` is closed by nobody here: its owner (the CLI) closes it. `metrics`:
    pass the `WebMetrics` the composition root also gave its `TimedSearch` (so retrieval latency
    shows); default: a fresh one. Either way it is `app.state.metrics`."""
    metrics = metrics or WebMetrics()
    runs = Runs(per_owner=options.concurrent_turns_per_owner)
    signer = SessionSigner(options.session_secret, ttl_s=options.session_ttl_s)
    keys = ApiKeys(options.api_keys)
    per_ip = RateLimiter(options.requests_per_minute_ip)
    per_session = RateLimiter(options.requests_per_minute_session)
    turns = RateLimiter(
        options.turns_per_minute_session, burst=max(3, int(options.turns_per_minute_session // 2))
    )
    new_sessions = RateLimiter(options.sessions_per_minute_ip)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await runs.aclose()

    app = FastAPI(
        title="quipfeed",
        version="1",
        summary="Ask what the public feed is saying; answers stream with cited posts.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            404: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            429: {"model": ErrorBody},
        },
    )
    app.state.runs = runs
    app.state.service = service
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message}}, exc.status, headers=exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc) or "not found"}}, 404)

    @app.exception_handler(BadInput)
    async def _bad_input(_: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc)}}, 422)

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc)}}, 409)

    @app.exception_handler(Limited)
    async def _limited(_: Request, exc: Limited) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": str(exc)}},
            429,
            headers={"Retry-After": str(max(1, int(exc.retry_after)))},
        )

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc)}}, 503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": {"message": f"{where}: {first.get('msg', 'invalid request')}"}}, 422
        )

    @app.middleware("http")
    async def _ip_limit(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/v1/"):
            wait = per_ip.allow(client_ip(request, options))
            if wait:
                return JSONResponse(
                    {"error": {"message": "too many requests from this address"}},
                    429,
                    headers={"Retry-After": str(int(wait) + 1)},
                )
        response: Response = await call_next(request)
        return response

    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=options.allowed_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Last-Event-ID",
            "X-API-Key",
            REQUEST_ID_HEADER,
        ],
        expose_headers=["Retry-After", REQUEST_ID_HEADER],
        max_age=600,
    )
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    # Outermost (added last): the id is current for everything below, refusals included.
    app.add_middleware(RequestIdMiddleware)

    def origin_allowed(origin: str | None) -> bool:
        return origin is None or "*" in options.allowed_origins or origin in options.allowed_origins

    async def identity(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Identity:
        who: Identity | None = None
        if x_api_key:
            who = keys.identify(x_api_key)
            if who is None:
                raise ApiError(401, "unknown API key")
        elif authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
            who = keys.identify(token)
            if who is None:
                try:
                    who = signer.verify(token)
                except BadToken as e:
                    raise ApiError(401, str(e)) from e
        if who is None:
            raise ApiError(401, "no session: POST /v1/session first, or send an API key")
        wait = per_session.allow(who.owner)
        if wait:
            raise ApiError(429, "too many requests; slow down", {"Retry-After": str(int(wait) + 1)})
        return who

    Who = Annotated[Identity, Depends(identity)]

    def check_text(text: str) -> str:
        if len(text) > options.max_message_chars:
            raise ApiError(413, f"message longer than {options.max_message_chars} characters")
        if not text.strip():
            raise ApiError(422, "the message is empty")
        return text

    async def start_turn(
        who: Identity,
        conversation_id: str,
        pending: Awaitable[AsyncIterator[TurnEvent]],
        kind: str,
    ) -> EventSourceResponse:
        wait = turns.allow(who.owner)
        if wait:
            if inspect.iscoroutine(pending):
                pending.close()  # never started: nothing to clean up
            raise ApiError(
                429, "too many questions; wait a moment", {"Retry-After": str(int(wait) + 1)}
            )
        # Unknown ids and bad input answer 4xx here; the stream (and its `turn` event with the
        # id to resume by) starts at once, before retrieval and the first token.
        events = metrics.watch(await pending, kind)
        try:
            # The run's task copies this request's context: the turn keeps its request id.
            run = runs.start(who.owner, conversation_id, lambda r: produce(r, events))
        except TooManyRuns as e:
            await aclose(events)
            raise ApiError(429, str(e)) from e
        return stream(run, -1, metrics)

    # ---- sessions, personas ----

    @app.post(
        "/v1/session",
        response_model=SessionOut,
        tags=["session"],
        summary="Start an anonymous session (a signed bearer token).",
    )
    async def new_session(request: Request) -> SessionOut:
        if not origin_allowed(request.headers.get("origin")):
            raise ApiError(403, "this site is not allowed to use this quipfeed")
        wait = new_sessions.allow(client_ip(request, options))
        if wait:
            raise ApiError(429, "too many new sessions", {"Retry-After": str(int(wait) + 1)})
        token, who, exp = signer.issue()
        return SessionOut(token=token, user=who.owner, expires_at=exp)

    @app.get("/v1/personas", response_model=list[PersonaCard], tags=["personas"])
    async def personas() -> list[PersonaCard]:
        return await service.personas()

    # ---- conversations ----

    @app.post(
        "/v1/conversations",
        response_model=ConversationSummary,
        status_code=201,
        tags=["conversations"],
    )
    async def create(who: Who, body: NewConversation | None = None) -> ConversationSummary:
        body = body or NewConversation()
        return await service.create_conversation(who.owner, body.persona, body.title)

    @app.get("/v1/conversations", response_model=list[ConversationSummary], tags=["conversations"])
    async def list_(who: Who) -> list[ConversationSummary]:
        return await service.list_conversations(who.owner)

    @app.get(
        "/v1/conversations/{conversation_id}",
        response_model=ConversationView,
        tags=["conversations"],
        summary="A conversation's selected branch.",
    )
    async def get(who: Who, conversation_id: str) -> ConversationView:
        return await service.conversation(who.owner, conversation_id)

    @app.patch(
        "/v1/conversations/{conversation_id}",
        response_model=ConversationSummary,
        tags=["conversations"],
        summary="Rename, or switch persona.",
    )
    async def patch(who: Who, conversation_id: str, body: ConversationPatch) -> ConversationSummary:
        return await service.update_conversation(
            who.owner, conversation_id, title=body.title, persona=body.persona
        )

    @app.delete("/v1/conversations/{conversation_id}", response_model=Ok, tags=["conversations"])
    async def delete(who: Who, conversation_id: str) -> Ok:
        await service.delete_conversation(who.owner, conversation_id)
        return Ok()

    @app.get(
        "/v1/conversations/{conversation_id}/export",
        tags=["conversations"],
        summary="Every message and version as JSON, or the selected line as Markdown.",
    )
    async def export(
        who: Who,
        conversation_id: str,
        format: Annotated[Literal["json", "markdown"], Query()] = "json",
    ) -> Response:
        data = await service.export(who.owner, conversation_id, format)
        name = f"quipfeed-{conversation_id}.{'json' if format == 'json' else 'md'}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if isinstance(data, str):
            return Response(data, media_type="text/markdown; charset=utf-8", headers=headers)
        return JSONResponse(data, headers=headers)

    # ---- turns (SSE) ----

    sse: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}
    }

    @app.post(
        "/v1/conversations/{conversation_id}/messages",
        tags=["turns"],
        responses=sse,
        response_class=EventSourceResponse,
        summary="Ask; the reply streams as SSE.",
    )
    async def send(who: Who, conversation_id: str, body: NewMessage) -> EventSourceResponse:
        text = check_text(body.text)
        return await start_turn(
            who,
            conversation_id,
            service.send(who.owner, conversation_id, text, persona=body.persona),
            "message",
        )

    @app.post(
        "/v1/conversations/{conversation_id}/messages/{message_id}/regenerate",
        tags=["turns"],
        responses=sse,
        response_class=EventSourceResponse,
        summary="A new version of an answer, streamed.",
    )
    async def regenerate(who: Who, conversation_id: str, message_id: str) -> EventSourceResponse:
        return await start_turn(
            who,
            conversation_id,
            service.regenerate(who.owner, conversation_id, message_id),
            "regenerate",
        )

    @app.post(
        "/v1/conversations/{conversation_id}/messages/{message_id}/edit",
        tags=["turns"],
        responses=sse,
        response_class=EventSourceResponse,
        summary="Edit a question (answered afresh) or an answer (continue from it).",
    )
    async def edit(
        who: Who, conversation_id: str, message_id: str, body: EditMessage
    ) -> EventSourceResponse:
        text = check_text(body.text)
        return await start_turn(
            who, conversation_id, service.edit(who.owner, conversation_id, message_id, text), "edit"
        )

    @app.post(
        "/v1/conversations/{conversation_id}/messages/{message_id}/select",
        response_model=ConversationView,
        tags=["turns"],
        summary="Show this version of a message (◀ 2/3 ▶).",
    )
    async def select(who: Who, conversation_id: str, message_id: str) -> ConversationView:
        return await service.select(who.owner, conversation_id, message_id)

    @app.post(
        "/v1/conversations/{conversation_id}/messages/{message_id}/feedback",
        response_model=Ok,
        tags=["turns"],
    )
    async def feedback(who: Who, conversation_id: str, message_id: str, body: FeedbackIn) -> Ok:
        await service.feedback(who.owner, conversation_id, message_id, body.rating, body.note)
        return Ok()

    @app.get(
        "/v1/turns/{turn_id}/events",
        tags=["turns"],
        responses=sse,
        response_class=EventSourceResponse,
        summary="Resume a turn's stream after `Last-Event-ID` (or `after`).",
    )
    async def resume(
        who: Who,
        turn_id: str,
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int | None, Query(ge=-1, le=1_000_000)] = None,
    ) -> EventSourceResponse:
        run = runs.get(who.owner, turn_id)
        if run is None:
            raise NotFound("no such turn (finished turns are kept for 5 minutes)")
        seq = -1 if after is None else after
        if last_event_id:
            rid, _, n = last_event_id.rpartition(".")
            if rid != turn_id or not n.isdigit():
                raise ApiError(400, "Last-Event-ID does not belong to this turn")
            seq = int(n)
        return stream(run, seq, metrics)

    @app.post(
        "/v1/turns/{turn_id}/stop",
        response_model=Ok,
        tags=["turns"],
        summary="Stop generating; the partial answer stays.",
    )
    async def stop(who: Who, turn_id: str) -> Ok:
        run = runs.get(who.owner, turn_id)
        if run is None:
            raise NotFound("no such turn")
        await runs.stop(run)
        return Ok()

    # ---- the feed ----

    @app.get(
        "/v1/trending",
        response_model=list[TrendItem],
        tags=["feed"],
        responses={503: {"model": ErrorBody, "description": "No trending source here."}},
    )
    async def trending(who: Who, limit: Annotated[int, Query(ge=1, le=50)] = 10) -> list[TrendItem]:
        return await service.trending(limit)

    @app.get("/v1/search", response_model=list[CitationCardModel], tags=["feed"])
    async def search(
        who: Who,
        q: Annotated[str, Query(min_length=1, max_length=1_000)],
        k: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> list[CitationCardModel]:
        return await service.search(q, k)

    add_openai_routes(app, service, identity, turns, metrics)

    # ---- static ----

    @app.get("/widget.js", include_in_schema=False)
    async def widget() -> FileResponse:
        return FileResponse(
            STATIC / "widget.js",
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
        )

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC / "demo.html", media_type="text/html; charset=utf-8")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "turns_active": runs.active()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.exposition().decode(), media_type="text/plain; version=0.0.4"
        )

    return app
