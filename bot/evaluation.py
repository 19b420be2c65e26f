"""`quipfeed eval chat`: a fixed set of questions over a replayed feed, scored for grounding.

Figures (each a share from 0 to 1 unless said otherwise):
- `citation_precision`: replies with citation markers whose every marker points to a retrieved post.
- `claims_cited`: sentences stating something (not questions, ≥4 words) in grounded replies that
  carry a citation — a proxy for "factual claims about the present carry a citation".
- `refusal_when_empty`: questions whose search finds nothing, answered with no citation and the
  persona's "nothing found" reply.
- `mean_chars`, `mean_tokens`, `ttft_ms_p50`: length and time to the first shown text.
- `suggestions_ok`: replies that came with 2–3 follow-up suggestions.
- `persona_adherence`: a judge model's 1–5 score of how well replies keep the persona's voice
  and rules (mean), when a judge is given.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.chat import Chat, Delta, Done
from bot.citations import markers
from bot.models import TurnResult
from bot.persona import Persona
from inference.engine import Engine, generate_json
from inference.errors import InferenceError
from inference.messages import ChatMessage, SamplingParams

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["score"],
}


@dataclass(frozen=True)
class EvalQuestion:
    text: str
    as_of: datetime
    kind: str  # "feed", "empty" (no post exists yet at as_of) or "small-talk"


def load_questions(path: Path, *, limit: int, earliest: datetime) -> list[EvalQuestion]:
    """`limit` feed questions from a JSON Lines file of {"query", "now"} (the retrieval dev set's
    form), the first two again at a time before `earliest` (nothing to find), and small talk."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    seen: set[str] = set()
    feed: list[EvalQuestion] = []
    for row in rows:
        if row["query"] not in seen and len(feed) < limit:
            seen.add(row["query"])
            feed.append(EvalQuestion(row["query"], datetime.fromisoformat(row["now"]), "feed"))
    before = earliest - timedelta(days=1)
    empty = [EvalQuestion(q.text, before, "empty") for q in feed[:2]]
    talk = [
        EvalQuestion(t, feed[0].as_of if feed else earliest, "small-talk")
        for t in ("hi", "thanks!")
    ]
    return feed + empty + talk


async def _turn(
    chat: Chat, user: str, q: EvalQuestion, persona: str
) -> tuple[TurnResult, str, float]:
    conv = await chat.new_conversation(user, persona=persona)
    start, first, result = time.perf_counter(), None, None
    async for event in chat.ask(conv.id, user, q.text, as_of=q.as_of):
        if isinstance(event, Delta) and event.text and first is None:
            first = time.perf_counter() - start
        elif isinstance(event, Done):
            result = event.result
    assert result is not None
    raw = (await chat.store.message(conv.id, result.message_id)).raw or ""
    return result, raw, (first or time.perf_counter() - start) * 1000


async def _judge(judge: Engine, persona: Persona, question: str, reply: str) -> int | None:
    prompt = [
        ChatMessage(
            role="system",
            content=(
                "You grade how well a reply keeps a chatbot persona's voice and rules. "
                "Score 1 (ignores it) to 5 (perfectly in character). Reply with JSON only."
            ),
        ),
        ChatMessage(
            role="user",
            content=(
                f"Persona:\n{persona.system_prompt()}\n\nQuestion: {question}\n\nReply:\n{reply}"
            ),
        ),
    ]
    try:
        value = await generate_json(
            judge, prompt, JUDGE_SCHEMA, SamplingParams(temperature=0, max_tokens=120)
        )
    except InferenceError:
        return None
    score = value.get("score") if isinstance(value, dict) else None
    return score if isinstance(score, int) and 1 <= score <= 5 else None


async def evaluate_chat(
    chat: Chat, questions: list[EvalQuestion], *, persona: str = "quip", judge: Engine | None = None
) -> dict[str, Any]:
    """Run every question in a conversation of its own and report the figures above."""
    rows: list[dict[str, Any]] = []
    with_markers = valid = claims = cited_claims = empty = refused = suggested = 0
    chars, tokens, ttfts, scores = [], [], [], []
    p = chat.personas[persona]
    for q in questions:
        result, raw, ttft = await _turn(chat, "eval", q, persona)
        numbers = markers(raw)
        retrieved = {
            s.number
            for s in (await chat.store.message(result.conversation_id, result.question_id)).context
        }
        if numbers:
            with_markers += 1
            valid += all(n in retrieved for n in numbers)
        if q.kind == "feed" and retrieved:
            for sentence in _SENTENCE.split(raw.strip()):
                if len(sentence.split()) >= 4 and not sentence.rstrip().endswith("?"):
                    claims += 1
                    cited_claims += bool(markers(sentence))
        if q.kind == "empty":
            empty += 1
            refused += not result.sources and result.text == p.empty_reply
        if q.kind != "empty":
            suggested += 2 <= len(result.suggestions) <= 3
        chars.append(len(result.text))
        tokens.append(result.tokens)
        ttfts.append(ttft)
        score = await _judge(judge, p, q.text, result.text) if judge and q.kind == "feed" else None
        if score is not None:
            scores.append(score)
        rows.append(
            {
                "question": q.text,
                "kind": q.kind,
                "query": result.query,
                "retrieved": len(retrieved),
                "cited": [s.number for s in result.sources],
                "markers": numbers,
                "reply": result.text,
                "suggestions": result.suggestions,
                "judge": score,
                "ttft_ms": round(ttft, 1),
            }
        )
    answered = sum(q.kind != "empty" for q in questions)
    return {
        "model": chat.engine.model_name,
        "persona": persona,
        "questions": len(questions),
        "citation_precision": valid / with_markers if with_markers else None,
        "replies_with_citations": with_markers,
        "claims_cited": cited_claims / claims if claims else None,
        "refusal_when_empty": refused / empty if empty else None,
        "mean_chars": statistics.fmean(chars) if chars else 0.0,
        "mean_tokens": statistics.fmean(tokens) if tokens else 0.0,
        "ttft_ms_p50": statistics.median(ttfts) if ttfts else None,
        "suggestions_ok": suggested / answered if answered else None,
        "persona_adherence": statistics.fmean(scores) if scores else None,
        "judged": len(scores),
        "rows": rows,
    }
