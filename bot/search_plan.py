"""Step 1 of a turn: does this message need the feed, and what should be searched for?

Rules, not a model call: they are instant (nothing delays the first token), deterministic and
testable. Small talk and follow-ups on the previous answer skip the search (that answer's posts
are still in the history the model sees); an elliptical follow-up ("and what about Bluesky?") is
rewritten into a standalone query from the previous one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|yo|hiya|howdy|thanks|thank you|thx|ty|ok|okay|k|cool|nice|great|lol|lmao|"
    r"haha+|bye|goodbye|good (morning|afternoon|evening|night)|how are you|who are you|"
    r"what are you|what can you do)\b[\s!.?,:)(]*\w{0,8}[\s!.?]*$",
    re.IGNORECASE,
)
_ON_ANSWER = re.compile(
    r"^\s*(why|how so|really|explain|tell me more|more|go on|what do you mean|elaborate|"
    r"can you elaborate|say (that|it) (again|shorter|simpler)|shorter|simpler|"
    r"summari[sz]e (that|it)|"
    r"in plain (words|english)|is that (true|right)|source\??|sources\??|which post)\b",
    re.IGNORECASE,
)
_ELLIPTICAL = re.compile(
    r"^\s*(and|but|also|what about|how about|and what about|and how about|what of|same for|"
    r"and on|and in|and for|what else)\b",
    re.IGNORECASE,
)
_ANAPHORA = {
    "it",
    "its",
    "they",
    "them",
    "their",
    "that",
    "this",
    "those",
    "these",
    "there",
    "he",
    "she",
    "his",
    "her",
}
_STOP = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "of",
    "on",
    "in",
    "at",
    "to",
    "for",
    "from",
    "by",
    "with",
    "about",
    "what",
    "whats",
    "what's",
    "how",
    "why",
    "who",
    "when",
    "where",
    "which",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "do",
    "does",
    "did",
    "people",
    "saying",
    "say",
    "says",
    "said",
    "talking",
    "think",
    "feed",
    "posts",
    "post",
    "right",
    "now",
    "today",
    "latest",
    "news",
    "any",
    "anything",
    "there",
    "me",
    "tell",
    "you",
    "your",
    "i",
    "we",
    "us",
    "also",
    "else",
    "same",
    "more",
    "so",
    "up",
    "going",
    "happening",
    "over",
    "s",
    "than",
    "then",
    "can",
    "could",
    "should",
    "would",
    "will",
    "just",
    "please",
    "hey",
    "ok",
} | _ANAPHORA
PLATFORMS = {"bluesky", "bsky", "mastodon", "twitter", "x", "rss", "threads", "reddit", "fediverse"}
_WORD = re.compile(r"[#@]?[\w'.-]+", re.UNICODE)


@dataclass(frozen=True)
class SearchPlan:
    """`query` is what to search for when `needs_feed`; `reason` says why, for logs and tests."""

    needs_feed: bool
    query: str | None
    reason: str


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry the topic (no stop words), in order, without repeats."""
    out: list[str] = []
    for raw in _WORD.findall(text.lower()):
        word = raw.strip(".'-")
        if word and word not in _STOP and word not in out:
            out.append(word)
    return out


def plan_search(message: str, previous_queries: Sequence[str], *, has_history: bool) -> SearchPlan:
    """Decide for `message`, given the standalone queries of earlier turns (latest last)."""
    text = message.strip()
    if _SMALL_TALK.match(text):
        return SearchPlan(False, None, "small talk")
    words = content_words(text)
    if has_history and _ON_ANSWER.match(text) and len(words) <= 2:
        return SearchPlan(False, None, "follow-up on the previous answer")
    previous = previous_queries[-1] if previous_queries else None
    tokens = {w.strip("?.!,") for w in text.lower().split()}
    elliptical = bool(_ELLIPTICAL.match(text)) or (bool(tokens & _ANAPHORA) and len(words) <= 3)
    if previous and elliptical:
        new = set(words)
        old = [w for w in content_words(previous) if w not in new]
        if new & PLATFORMS:
            # "and on Bluesky?" asks the same about another platform: the old platform goes.
            old = [w for w in old if w not in PLATFORMS]
        query = " ".join([*old, *words]).strip()
        if query:
            return SearchPlan(True, query, "follow-up rewritten from the previous query")
    if not words:
        if has_history:
            return SearchPlan(False, None, "nothing to search for; answering from the conversation")
        return SearchPlan(False, None, "nothing to search for")
    return SearchPlan(True, text, "a question for the feed")
