"""The in-process engine: a transformers causal LM (MoE or dense), CPU or CUDA.

One worker thread owns the model. Requests are prefilled one at a time (reusing a cached prompt
prefix when one matches) and then decoded together: each decode step runs one forward pass over
every active sequence, so concurrent requests share the model rather than queue behind each
other. A newcomer joins the running batch between steps by left-padding its KV cache to the
batch's length (continuous batching on transformers' `DynamicCache`).

Memory is bounded by `max_batch_size` active sequences × the context window, `max_waiting`
queued requests, and `prefix_cache_tokens` cached prefix tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from inference.engine import collect
from inference.errors import EngineOverloaded, EngineUnavailable, InferenceError, InvalidRequest
from inference.layout import fit_to_window
from inference.messages import (
    ChatMessage,
    Chunk,
    Completion,
    FinishReason,
    PromptReport,
    SamplingParams,
    Usage,
    check_messages,
)
from inference.prefix_cache import KV, PrefixCache

Device = Literal["auto", "cpu", "cuda"]


@dataclass
class EngineStats:
    """Counters a server exports as metrics."""

    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    decode_steps: int = 0
    max_batch_rows: int = 0
    active_rows: int = 0
    waiting: int = 0


@dataclass(eq=False)
class _Request:
    ids: list[int]
    params: SamplingParams
    report: PromptReport
    grammar: Any
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Chunk | BaseException | None]
    cancelled: bool = False
    rows_left: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def emit(self, event: Chunk | BaseException | None) -> None:
        _deliver(self.loop, [(self.events, event)])


Event = Chunk | BaseException | None


def _deliver(
    loop: asyncio.AbstractEventLoop, items: list[tuple[asyncio.Queue[Event], Event]]
) -> None:
    def put_all() -> None:
        for queue, event in items:
            queue.put_nowait(event)

    # The consumer may be gone (its loop closed): then nobody needs the events.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(put_all)


@dataclass(eq=False)
class _Row:
    req: _Request
    index: int
    generator: torch.Generator | None
    matcher: Any
    position: int
    next_token: int = -1
    out_ids: list[int] = field(default_factory=list)
    emitted: int = 0
    done: bool = False


@dataclass(eq=False)
class _Batch:
    cache: Any  # transformers.DynamicCache
    mask: torch.Tensor  # [rows, kv_len], 1 where the KV column is a real token
    rows: list[_Row]


def _mergeable(chunk: Chunk, nxt: object) -> bool:
    return isinstance(nxt, Chunk) and nxt.usage is None and nxt.index == chunk.index


def _pick_device(device: Device) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LocalEngine:
    """An `Engine` running a transformers model in this process.

    `model` is a local folder or, where the machine can reach the Hugging Face hub, a hub id.
    Use `LocalEngine.load(...)` (blocking, seconds) or `await LocalEngine.aload(...)`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        max_batch_size: int = 16,
        max_waiting: int = 256,
        prefix_cache_tokens: int = 0,
        context_window: int | None = None,
    ) -> None:
        from transformers import DynamicCache

        self._model = model
        self._tok = tokenizer
        self._name = name
        self._device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        cfg = model.config.get_text_config()
        window = context_window or getattr(cfg, "max_position_embeddings", None) or 4096
        self.context_window = int(window)
        self.vocab_size = int(cfg.vocab_size)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos: set[int] = set(
            eos if isinstance(eos, list) else [eos] if eos is not None else []
        )
        if not self._eos:
            raise InvalidRequest("model has no end-of-sequence token")
        self._template = tokenizer.chat_template
        if not self._template:
            from inference.tiny_model import CHATML_TEMPLATE

            self._template = CHATML_TEMPLATE
        self._prefix = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens > 0 else None
        self._dynamic_cache_cls = DynamicCache
        # Batching and prefix reuse edit the cache's tensors directly; that is only sound for plain
        # full-attention layers. Checked on the first prefill.
        self._plain_cache: bool | None = None
        self.stats = EngineStats()
        self._tok_lock = threading.Lock()
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._grammar_compiler: Any = None
        self._grammars: dict[str, Any] = {}
        # Events the worker produced this step, delivered with one wake-up per event loop
        # (a wake-up per token per request costs a syscall each at high concurrency).
        self._outbox: list[tuple[_Request, Event]] = []
        # Counting tokens of over-long prompts is how truncation decides; silence the warning.
        tokenizer.model_max_length = 10**12

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        device: Device = "auto",
        dtype: str = "auto",
        name: str | None = None,
        **kwargs: Any,
    ) -> LocalEngine:
        """Load a model folder or hub id. `dtype="auto"`: bfloat16 on CUDA, float32 on CPU."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = _pick_device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if dev == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        try:
            tok = AutoTokenizer.from_pretrained(str(model))
            lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch_dtype)
        except OSError as e:
            raise EngineUnavailable(f"cannot load model {model!s}: {e}") from e
        lm.to(dev)  # type: ignore[arg-type]  # transformers' stub for .to is too narrow
        lm.eval()
        return cls(lm, tok, name=name or Path(str(model)).name or str(model), **kwargs)

    @classmethod
    async def aload(cls, model: str | Path, **kwargs: Any) -> LocalEngine:
        return await asyncio.to_thread(cls.load, model, **kwargs)

    # ---- the Engine protocol ------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._name

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> Completion:
        return await collect(self.stream(messages, params))

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams | None = None
    ) -> AsyncGenerator[Chunk, None]:
        params = params or SamplingParams()
        msgs = check_messages(messages)
        ids, report = await asyncio.to_thread(self._encode, msgs, params)
        grammar = await self._grammar_for(params)
        req = _Request(
            ids=ids,
            params=params,
            report=report,
            grammar=grammar,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
        )
        self._submit(req)
        held: list[Event] = []  # an event read ahead while merging, delivered next
        try:
            while True:
                event = held.pop() if held else await req.events.get()
                if event is None:
                    return
                if isinstance(event, BaseException):
                    raise event
                # A consumer that fell behind gets the text queued for it as one chunk rather
                # than one per token: less per-chunk work (SSE events, JSON) exactly when the
                # process is busiest.
                while (
                    event.usage is None and event.finish_reason is None and not req.events.empty()
                ):
                    nxt = req.events.get_nowait()
                    if not _mergeable(event, nxt):
                        held.append(nxt)
                        break
                    assert isinstance(nxt, Chunk)
                    event = Chunk(
                        index=event.index,
                        text=event.text + nxt.text,
                        finish_reason=nxt.finish_reason,
                    )
                yield event
        finally:
            # Reached on normal end, on the consumer closing the iterator, and on task
            # cancellation: the worker drops the rows at its next step.
            req.cancelled = True

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker thread; waiting and running requests fail with `EngineUnavailable`."""
        with self._cond:
            self._stopping = True
            pending = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for req in pending:
            req.emit(EngineUnavailable("engine is shutting down"))
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    # ---- extras for the server and tests ------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the chat template makes of `messages` (generation prompt added)."""
        with self._tok_lock:
            text = self._tok.apply_chat_template(
                [m.model_dump() for m in messages],
                chat_template=self._template,
                add_generation_prompt=True,
                tokenize=False,
            )
        return str(text)

    def tokenize(self, text: str) -> list[int]:
        with self._tok_lock:
            return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of the prompt for `messages`, exactly as the engine would run it."""
        return self.tokenize(self.render(messages))

    @property
    def prefix_cache(self) -> PrefixCache | None:
        return self._prefix

    # ---- request admission --------------------------------------------------------------------

    def _encode(
        self, msgs: list[ChatMessage], params: SamplingParams
    ) -> tuple[list[int], PromptReport]:
        reserve = min(params.max_tokens, self.context_window // 2)
        budget = self.context_window - reserve
        kept, report = fit_to_window(msgs, lambda m: len(self.prompt_ids(m)), budget)
        return self.prompt_ids(kept), report

    async def _grammar_for(self, params: SamplingParams) -> Any:
        if params.json_schema is None and params.regex is None:
            return None
        return await asyncio.to_thread(self._compile_grammar, params)

    def _compile_grammar(self, params: SamplingParams) -> Any:
        import json

        import xgrammar as xgr

        key = (
            json.dumps(params.json_schema, sort_keys=True)
            if params.json_schema
            else f"re:{params.regex}"
        )
        if key in self._grammars:
            return self._grammars[key]
        if self._grammar_compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(
                self._tok, vocab_size=self.vocab_size, stop_token_ids=sorted(self._eos)
            )
            self._grammar_compiler = xgr.GrammarCompiler(info)
        try:
            if params.json_schema is not None:
                # No free whitespace: a weak model can otherwise emit spaces forever.
                compiled = self._grammar_compiler.compile_json_schema(
                    json.dumps(params.json_schema), any_whitespace=False
                )
            else:
                compiled = self._grammar_compiler.compile_regex(params.regex)
        except Exception as e:  # xgrammar raises RuntimeError/ValueError subclasses
            raise InvalidRequest(f"cannot compile the output constraint: {e}") from e
        if len(self._grammars) > 64:
            self._grammars.clear()
        self._grammars[key] = compiled
        return compiled

    def _submit(self, req: _Request) -> None:
        with self._cond:
            if self._stopping:
                raise EngineUnavailable("engine is shut down")
            if len(self._waiting) >= self.max_waiting:
                raise EngineOverloaded(f"{len(self._waiting)} requests already waiting")
            self._waiting.append(req)
            self.stats.requests += 1
            self.stats.waiting = len(self._waiting)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="local-engine", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _take(self, rows_now: int) -> list[_Request]:
        with self._cond:
            while not self._waiting and rows_now == 0 and not self._stopping:
                self._cond.wait()
            taken: list[_Request] = []
            while self._waiting:
                n = self._waiting[0].params.n
                if rows_now > 0 and rows_now + n > self.max_batch_size:
                    break
                taken.append(self._waiting.popleft())
                rows_now += n
            self.stats.waiting = len(self._waiting)
            return taken

    def _post(self, req: _Request, event: Event) -> None:
        self._outbox.append((req, event))

    def _flush(self) -> None:
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
        for req, event in self._outbox:
            by_loop.setdefault(req.loop, []).append((req.events, event))
        self._outbox = []
        for loop, items in by_loop.items():
            _deliver(loop, items)

    # ---- the worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        batches: list[_Batch] = []
        while True:
            rows_now = sum(len(b.rows) for b in batches)
            new = self._take(rows_now)
            if self._stopping:
                for b in batches:
                    for row in b.rows:
                        self._post(row.req, EngineUnavailable("engine is shutting down"))
                self._flush()
                return
            for req in new:
                if req.cancelled:
                    self._finish_request(req, cancelled=True)
                    self._flush()
                    continue
                try:
                    with torch.inference_mode():
                        batch = self._prefill(req)
                except Exception as e:
                    self.stats.failed += 1
                    self._post(
                        req,
                        e
                        if isinstance(e, InferenceError)
                        else InferenceError(f"prefill failed: {e}"),
                    )
                    continue
                finally:
                    self._flush()  # the first token goes out now, not after the other prefills
                if batch is None:
                    continue
                if batches and self._plain_cache:
                    batches[0] = self._merge(batches[0], batch)
                else:
                    batches.append(batch)
            stepped: list[_Batch] = []
            for b in batches:
                try:
                    with torch.inference_mode():
                        kept = self._step(b)
                except Exception as e:
                    self.stats.failed += 1
                    for row in b.rows:
                        if not row.done:
                            row.done = True
                            self._post(row.req, InferenceError(f"decode failed: {e}"))
                    continue
                if kept is not None:
                    stepped.append(kept)
            self._flush()
            batches = stepped
            self.stats.active_rows = sum(len(b.rows) for b in batches)

    def _prefill(self, req: _Request) -> _Batch | None:
        ids = req.ids
        n = req.params.n
        past: KV | None = None
        start = 0
        if self._prefix is not None and self._plain_cache:
            past, start = self._prefix.lookup(ids)
        cache = (
            self._dynamic_cache_cls(ddp_cache_data=past)
            if past is not None
            else self._dynamic_cache_cls(config=self._model.config)
        )
        input_ids = torch.tensor([ids[start:]], device=self._device)
        out = self._model(input_ids=input_ids, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        if self._plain_cache is None:
            from transformers.cache_utils import DynamicLayer

            self._plain_cache = all(type(layer) is DynamicLayer for layer in cache.layers)
        if self._prefix is not None and self._plain_cache:
            self._prefix.store(ids, [(layer.keys, layer.values) for layer in cache.layers])
        req.cached_tokens = start
        self.stats.prompt_tokens += len(ids)
        self.stats.cached_tokens += start
        if n > 1:
            cache.batch_repeat_interleave(n)
        rows: list[_Row] = []
        for i in range(n):
            rows.append(
                _Row(
                    req=req,
                    index=i,
                    generator=self._generator(req.params, i),
                    matcher=self._matcher(req.grammar),
                    position=len(ids),
                )
            )
        req.rows_left = n
        mask = torch.ones((n, len(ids)), dtype=torch.long, device=self._device)
        batch = _Batch(cache=cache, mask=mask, rows=rows)
        for row in rows:
            self._advance(row, self._sample(row, logits[0]))
        return self._compact(batch)

    def _step(self, batch: _Batch) -> _Batch | None:
        rows = batch.rows
        input_ids = torch.tensor([[r.next_token] for r in rows], device=self._device)
        positions = torch.tensor([[r.position] for r in rows], device=self._device)
        ones = torch.ones((len(rows), 1), dtype=batch.mask.dtype, device=self._device)
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        out = self._model(
            input_ids=input_ids,
            attention_mask=batch.mask,
            position_ids=positions,
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        self.stats.decode_steps += 1
        self.stats.max_batch_rows = max(self.stats.max_batch_rows, len(rows))
        for i, row in enumerate(rows):
            row.position += 1
            if row.req.cancelled:
                continue
            self._advance(row, self._sample(row, logits[i]))
        return self._compact(batch)

    def _compact(self, batch: _Batch) -> _Batch | None:
        """Drop finished and cancelled rows, then KV columns that are padding for every row."""
        for row in batch.rows:
            if row.req.cancelled and not row.done:
                row.done = True
                row.req.rows_left -= 1
                if row.req.rows_left == 0:
                    self._finish_request(row.req, cancelled=True)
        if self._prefix is not None and self._plain_cache:
            for i, row in enumerate(batch.rows):
                if row.done and not row.req.cancelled and row.req.params.n == 1:
                    self._remember_reply(batch, i, row)
        keep = [i for i, r in enumerate(batch.rows) if not r.done]
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            batch.cache.batch_select_indices(torch.tensor(keep, device=self._device))
            batch.mask = batch.mask[keep]
            batch.rows = [batch.rows[i] for i in keep]
        if self._plain_cache:
            lead = int((batch.mask.cumsum(dim=1) == 0).sum(dim=1).min())
            if lead > 0:
                batch.mask = batch.mask[:, lead:]
                for layer in batch.cache.layers:
                    layer.keys = layer.keys[..., lead:, :]
                    layer.values = layer.values[..., lead:, :]
        return batch

    def _remember_reply(self, batch: _Batch, i: int, row: _Row) -> None:
        """Cache the KV of prompt + reply: the next turn of the conversation starts with both."""
        assert self._prefix is not None
        real = int(batch.mask[i].sum())
        ids = (row.req.ids + row.out_ids)[:real]
        # Cloned: a view would pin the whole batch's KV tensors in memory.
        kv = [
            (
                layer.keys[i : i + 1, :, -real:, :].clone(),
                layer.values[i : i + 1, :, -real:, :].clone(),
            )
            for layer in batch.cache.layers
        ]
        self._prefix.store(ids, kv)

    def _merge(self, a: _Batch, b: _Batch) -> _Batch:
        length = max(a.mask.shape[1], b.mask.shape[1])

        def pad(t: torch.Tensor) -> torch.Tensor:
            # Zero KV columns on the left; the mask keeps attention off them.
            return torch.nn.functional.pad(t, (0, 0, length - t.shape[-2], 0))

        data = [
            (torch.cat([pad(la.keys), pad(lb.keys)]), torch.cat([pad(la.values), pad(lb.values)]))
            for la, lb in zip(a.cache.layers, b.cache.layers, strict=True)
        ]
        masks = [torch.nn.functional.pad(m, (length - m.shape[1], 0)) for m in (a.mask, b.mask)]
        return _Batch(
            cache=self._dynamic_cache_cls(ddp_cache_data=data),
            mask=torch.cat(masks),
            rows=a.rows + b.rows,
        )

    # ---- sampling and text --------------------------------------------------------------------

    def _generator(self, params: SamplingParams, index: int) -> torch.Generator | None:
        if params.temperature == 0:
            return None
        gen = torch.Generator(device=self._device)
        seed = (
            (params.seed + index)
            if params.seed is not None
            else int.from_bytes(os.urandom(8), "little")
        )
        gen.manual_seed(seed % (2**63))
        return gen

    def _matcher(self, grammar: Any) -> Any:
        if grammar is None:
            return None
        import xgrammar as xgr

        return xgr.GrammarMatcher(grammar)

    def _sample(self, row: _Row, logits: torch.Tensor) -> int:
        params = row.req.params
        if row.matcher is not None:
            import xgrammar as xgr

            bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
            row.matcher.fill_next_token_bitmask(bitmask)
            logits = logits.unsqueeze(0).clone()
            xgr.apply_token_bitmask_inplace(
                logits, bitmask.to(logits.device), vocab_size=self.vocab_size
            )
            logits = logits[0]
        if params.temperature == 0 or row.generator is None:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            outside = (torch.cumsum(sorted_p, dim=-1) - sorted_p) > params.top_p
            sorted_p[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _advance(self, row: _Row, token: int) -> None:
        """Take one sampled token for `row`: emit text, detect the end."""
        params = row.req.params
        if row.matcher is not None:
            row.matcher.accept_token(token)
        if token in self._eos:
            self._end_row(row, "stop")
            return
        row.out_ids.append(token)
        row.next_token = token
        row.req.completion_tokens += 1
        with self._tok_lock:
            text = self._tok.decode(row.out_ids, skip_special_tokens=True)
        if params.stop:
            hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
            if hits:
                self._end_row(row, "stop", text[: min(hits)])
                return
        if row.matcher is not None and row.matcher.is_terminated():
            self._end_row(row, "stop", text)
            return
        if len(row.out_ids) >= params.max_tokens or row.position + 1 >= self.context_window:
            self._end_row(row, "length", text)
            return
        # Hold back what could still become a stop sequence or a split UTF-8 character.
        safe = len(text) - (max((len(s) for s in params.stop), default=1) - 1)
        while safe > row.emitted and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > row.emitted:
            self._post(row.req, Chunk(index=row.index, text=text[row.emitted : safe]))
            row.emitted = safe

    def _end_row(self, row: _Row, reason: FinishReason, text: str | None = None) -> None:
        if text is None:
            with self._tok_lock:
                text = self._tok.decode(row.out_ids, skip_special_tokens=True)
        row.done = True
        self._post(row.req, Chunk(index=row.index, text=text[row.emitted :], finish_reason=reason))
        row.emitted = len(text)
        row.req.rows_left -= 1
        if row.req.rows_left == 0:
            self._finish_request(row.req)

    def _finish_request(self, req: _Request, *, cancelled: bool = False) -> None:
        if cancelled:
            self.stats.cancelled += 1
        else:
            self.stats.completed += 1
        self.stats.completion_tokens += req.completion_tokens
        usage = Usage(
            prompt_tokens=len(req.ids),
            completion_tokens=req.completion_tokens,
            cached_tokens=req.cached_tokens,
        )
        self._post(req, Chunk(usage=usage, prompt=req.report))
        self._post(req, None)
