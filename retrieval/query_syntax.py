"""Understanding the ask: time words and filter syntax in a query become a structured search.

`parse_query("what is @alice saying about the keynote today from:alice.bsky.social", now)`
returns a `ParsedQuery` whose `text` is what to rank on (time words and filter tokens removed)
and whose `since`/`until`/`half_life`/`authors`/`hashtags`/`langs`/`phrases` say how to search.

What is recognised (case-insensitive; everything else is left in the text):

- `from:handle` (a leading `@` is dropped) → authors; `#tag` → hashtags (the word stays in the
  text so ranking still sees it); `lang:xx` → langs; `"a phrase"` (straight or curly quotes) →
  phrases a post must contain (the words stay in the text).
- Time words → a window and a half-life. The half-life follows the window: "right now" questions
  decay in an hour, "this week" ones over two days, so a short question is not answered by
  yesterday's posts and a long one is not answered only by the last hour's.

  | words | window (since … until) | half-life |
  |---|---|---|
  | right now, just now, at the moment, currently, breaking | last 12 h | 1 h |
  | last/past N minutes/hours/days/weeks (N: 3, a, few …) | that span | span / 4, ≥ 10 min |
  | today | since 00:00 UTC (at least the last 6 h) | 4 h |
  | this morning / afternoon / evening, tonight | from 00:00 / 12:00 / 17:00 UTC | 3 h |
  | yesterday | yesterday 00:00 … today 00:00 UTC | 12 h |
  | this week / month / year | last 7 / 31 / 365 days | 2 d / 7 d / 30 d |
  | lately, recently, latest, these days, most recent, newest | none | 12 h |
  | since yesterday / monday … sunday / YYYY-MM-DD | from that day's 00:00 UTC | window / 4 |
  | since the X, since his/her/their X (an event) | resolved by the searcher (below) | 6 h |

- "since the keynote": an *event phrase* (`since` followed by the/his/her/their/its/our and up to
  six words). The parser cannot know when the keynote was; `ParsedQuery.event` carries the
  phrase and `event_start` resolves it against the index: it searches the phrase (hybrid, no
  decay) over the 7 days before `now`, keeps the *strong* matches (dense similarity at least
  0.8 × the best one's and ≥ 0.35, or among the 3 best BM25 scores when no dense score is known),
  and takes the earliest of those as `since`. The idea: the moment the feed started talking about
  the event is when the first posts that are clearly about it appear. "since" followed by other
  words ("since you asked") is not a time word and stays in the text.

Times are UTC: a post's `created_at` is UTC, and the searcher has no user time zone to go by.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retrieval.store import Hit

# A window wider than this is a typo, not a question (as in retrieval.search).
MAX_WINDOW = timedelta(days=365 * 30)
MIN_HALF_LIFE = timedelta(minutes=10)
EVENT_LOOKBACK = timedelta(days=7)
EVENT_STRONG_RATIO = 0.8
EVENT_MIN_DENSE = 0.35
EVENT_HALF_LIFE = timedelta(hours=6)


class QueryNotUnderstood(ValueError):
    """The query asks for something that cannot be searched (e.g. the last 900 years)."""


@dataclass(frozen=True)
class ParsedQuery:
    """A query split into what to rank on and how to filter and weigh recency.

    `text` is never empty when `original` is not: if removing time words and filters leaves
    nothing, it falls back to the filter words (handles, tags) or the original text.
    """

    text: str
    original: str
    since: datetime | None = None
    until: datetime | None = None
    half_life: timedelta | None = None
    authors: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    langs: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    event: str | None = None
    time_words: tuple[str, ...] = ()

    @property
    def understood(self) -> bool:
        """True when anything beyond plain text was recognised."""
        return bool(
            self.since
            or self.until
            or self.half_life
            or self.authors
            or self.hashtags
            or self.langs
            or self.phrases
            or self.event
        )


_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "few": 3,
    "couple of": 2,
    "couple": 2,
}
_UNITS = {
    "second": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "hr": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=31),
    "year": timedelta(days=365),
}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_FROM = re.compile(r"(?<![\w:])from:@?([\w.@:-]+\w)", re.IGNORECASE)
_LANG = re.compile(r"(?<![\w:])lang:([a-z]{2,3}(?:-[a-z]{2})?)\b", re.IGNORECASE)
_TAG = re.compile(r"(?<![\w#&])#(\w[\w-]*)")
_PHRASE = re.compile(r"\"([^\"]{1,200})\"|\u201c([^\u201d]{1,200})\u201d")
_LAST_N = re.compile(
    r"\b(?:(?:in|over|during|within)\s+)?(?:the\s+)?(?:last|past)\s+"
    r"(\d{1,6}|a|an|one|two|three|four|five|six|seven|eight|nine|ten|twelve|few|couple(?: of)?)?"
    r"\s*(seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)\b",
    re.IGNORECASE,
)
_NOW = re.compile(
    r"\b(?:right now|just now|at the moment|as we speak|currently|breaking)\b", re.IGNORECASE
)
_TODAY = re.compile(r"\btoday(?:'s)?\b", re.IGNORECASE)
_PART_OF_DAY = re.compile(r"\b(?:this\s+(morning|afternoon|evening)|(tonight))\b", re.IGNORECASE)
_YESTERDAY = re.compile(r"\byesterday(?:'s)?\b", re.IGNORECASE)
_THIS = re.compile(r"\b(?:this|the\s+past)\s+(week|month|year)\b", re.IGNORECASE)
_LATELY = re.compile(r"\b(?:lately|recently|latest|these days|most recent|newest)\b", re.IGNORECASE)
_SINCE_DAY = re.compile(
    r"\bsince\s+(yesterday|" + "|".join(_WEEKDAYS) + r"|\d{4}-\d{2}-\d{2})\b",
    re.IGNORECASE,
)
_SINCE_EVENT = re.compile(
    r"\bsince\s+((?:the|his|her|their|its|our)\s+[^\s,.;:!?\"]+(?:\s+[^\s,.;:!?\"]+){0,5})",
    re.IGNORECASE,
)
# Words that end an event phrase: "since the keynote what are people saying" → "the keynote".
_EVENT_STOP = re.compile(
    r"\b(?:what|who|how|why|where|when|is|are|was|were|has|have|did|does|do|and|but|about|"
    r"on|in|for|with|from|to)\b",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]")


def clean_text(text: str) -> str:
    """`text` with control characters (bar tab and newline) replaced by spaces; NFC."""
    return unicodedata.normalize("NFC", _CONTROL.sub(" ", text))


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _half_of(window: timedelta) -> timedelta:
    return max(window / 4, MIN_HALF_LIFE)


def _count(word: str | None) -> float:
    if not word:
        return 1
    word = " ".join(word.lower().split())
    if word.isdigit():
        return int(word)
    return _NUMBER_WORDS.get(word, 1)


def _unit(word: str) -> timedelta:
    word = word.lower().rstrip("s") or word
    return _UNITS.get(word, _UNITS.get(word.rstrip("s"), timedelta(hours=1)))


def parse_query(text: str, now: datetime) -> ParsedQuery:
    """Split `text` into ranking text, filters and a time window, as of `now` (UTC).

    Raises `QueryNotUnderstood` for a window that cannot be meant (longer than 30 years, or a
    date in the future). Never raises for anything else: unknown syntax stays in the text.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    original = text
    text = clean_text(text)
    authors: list[str] = []
    hashtags: list[str] = []
    langs: list[str] = []
    phrases: list[str] = []
    words: list[str] = []
    since: datetime | None = None
    until: datetime | None = None
    half_life: timedelta | None = None
    event: str | None = None

    def narrow(start: datetime, hl: timedelta, end: datetime | None = None) -> None:
        # Several time words: the narrowest window and the shortest half-life win.
        nonlocal since, until, half_life
        since = start if since is None else max(since, start)
        if end is not None:
            until = end if until is None else min(until, end)
        half_life = hl if half_life is None else min(half_life, hl)

    def take(pattern: re.Pattern[str], handle: Callable[[re.Match[str]], str]) -> None:
        nonlocal text
        text = pattern.sub(handle, text)

    def on_from(m: re.Match[str]) -> str:
        authors.append(m[1])
        return " "

    def on_lang(m: re.Match[str]) -> str:
        langs.append(m[1].lower())
        return " "

    def on_tag(m: re.Match[str]) -> str:
        hashtags.append(m[1].lower())
        return m[1]

    def on_phrase(m: re.Match[str]) -> str:
        phrase = " ".join((m[1] or m[2] or "").split())
        if phrase:
            phrases.append(phrase)
        return f" {phrase} "

    take(_FROM, on_from)
    take(_LANG, on_lang)
    take(_PHRASE, on_phrase)
    take(_TAG, on_tag)

    def on_last_n(m: re.Match[str]) -> str:
        window = _count(m[1]) * _unit(m[2])
        if window > MAX_WINDOW:
            raise QueryNotUnderstood(
                f"{m[0].strip()!r} is a window longer than 30 years; no feed goes back that far"
            )
        if window <= timedelta(0):
            raise QueryNotUnderstood(f"{m[0].strip()!r} is an empty window")
        words.append(m[0].strip())
        narrow(now - window, _half_of(window))
        return " "

    def on_now(m: re.Match[str]) -> str:
        words.append(m[0])
        narrow(now - timedelta(hours=12), timedelta(hours=1))
        return " "

    def on_today(m: re.Match[str]) -> str:
        words.append(m[0])
        narrow(min(_midnight(now), now - timedelta(hours=6)), timedelta(hours=4))
        return " "

    def on_part(m: re.Match[str]) -> str:
        words.append(m[0])
        part = (m[1] or m[2] or "").lower()
        hour = {"morning": 0, "afternoon": 12, "evening": 17, "tonight": 17}[part]
        start = _midnight(now) + timedelta(hours=hour)
        if start >= now:
            start = now - timedelta(hours=6)
        narrow(start, timedelta(hours=3))
        return " "

    def on_yesterday(m: re.Match[str]) -> str:
        words.append(m[0])
        narrow(_midnight(now) - timedelta(days=1), timedelta(hours=12), _midnight(now))
        return " "

    def on_this(m: re.Match[str]) -> str:
        words.append(m[0])
        span, hl = {
            "week": (timedelta(days=7), timedelta(days=2)),
            "month": (timedelta(days=31), timedelta(days=7)),
            "year": (timedelta(days=365), timedelta(days=30)),
        }[m[1].lower()]
        narrow(now - span, hl)
        return " "

    def on_lately(m: re.Match[str]) -> str:
        nonlocal half_life
        words.append(m[0])
        twelve = timedelta(hours=12)
        half_life = twelve if half_life is None else min(half_life, twelve)
        return " "

    def on_since_day(m: re.Match[str]) -> str:
        word = m[1].lower()
        if word == "yesterday":
            start = _midnight(now) - timedelta(days=1)
        elif word in _WEEKDAYS:
            back = (now.weekday() - _WEEKDAYS.index(word)) % 7 or 7
            start = _midnight(now) - timedelta(days=back)
        else:
            try:
                start = datetime.fromisoformat(word).replace(tzinfo=UTC)
            except ValueError:
                return m[0]  # "since 2024-13-45": not a date, leave it as words
            if start > now:
                raise QueryNotUnderstood(f"{m[0]!r} is in the future (now is {now:%Y-%m-%d})")
            if now - start > MAX_WINDOW:
                raise QueryNotUnderstood(f"{m[0]!r} is more than 30 years ago")
        words.append(m[0])
        narrow(start, _half_of(now - start))
        return " "

    def on_since_event(m: re.Match[str]) -> str:
        nonlocal event
        raw = m[1]
        stop = _EVENT_STOP.search(raw, pos=raw.find(" ") + 1)
        head, rest = (raw[: stop.start()], raw[stop.start() :]) if stop else (raw, "")
        phrase = " ".join(head.split())
        if len(phrase.split()) < 2:
            return m[0]
        event = phrase
        words.append(f"since {phrase}")
        return f" {rest}"

    take(_LAST_N, on_last_n)
    take(_NOW, on_now)
    take(_PART_OF_DAY, on_part)
    take(_TODAY, on_today)
    take(_YESTERDAY, on_yesterday)
    take(_THIS, on_this)
    take(_SINCE_DAY, on_since_day)
    take(_SINCE_EVENT, on_since_event)
    take(_LATELY, on_lately)
    if event is not None and half_life is None:
        half_life = EVENT_HALF_LIFE

    ranked = " ".join(text.split()).strip(" ,;:?!-")
    if not ranked:
        # "from:alice today": nothing left to rank on; the filter words are the best text.
        ranked = " ".join([*authors, *hashtags, *phrases]) or " ".join(clean_text(original).split())
    return ParsedQuery(
        text=ranked,
        original=original,
        since=since,
        until=until,
        half_life=half_life,
        authors=tuple(dict.fromkeys(authors)),
        hashtags=tuple(dict.fromkeys(hashtags)),
        langs=tuple(dict.fromkeys(langs)),
        phrases=tuple(dict.fromkeys(phrases)),
        event=event,
        time_words=tuple(words),
    )


def event_start(
    event: str, now: datetime, search: Callable[[str, datetime, datetime], Sequence[Hit]]
) -> datetime | None:
    """When the feed started talking about `event`: the earliest strong match (see module doc).

    `search(text, since, as_of)` runs a hybrid search without recency decay and returns its
    best hits (20 or so). None when nothing matches.
    """
    hits = list(search(event, now - EVENT_LOOKBACK, now))
    if not hits:
        return None
    dense = [h.why.get("dense") for h in hits]
    best_dense = max((d for d in dense if d is not None), default=None)
    strong: list[Hit] = []
    if best_dense is not None:
        bar = max(EVENT_MIN_DENSE, EVENT_STRONG_RATIO * best_dense)
        strong = [h for h in hits if (h.why.get("dense") or 0.0) >= bar]
    if not strong:
        by_sparse = sorted(hits, key=lambda h: -h.why.get("sparse", 0.0))
        strong = [h for h in by_sparse[:3] if h.why.get("sparse", 0.0) > 0]
    if not strong:
        return None
    return min(h.post.created_at for h in strong)
