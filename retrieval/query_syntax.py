"""Understanding the ask: time words become recency preferences, operators become filters.

`parse_query("what is alice saying about the keynote today from:alice.bsky.social", now)`
returns a `ParsedQuery` whose `text` is what to rank on (time words and operators removed) and
whose fields say how to search.

Two kinds of understanding, deliberately unequal:

- **Explicit operators filter hard** (the asker typed them): `from:handle` (a leading `@` is
  dropped) → authors; `#tag` → hashtags (the word stays in the text so ranking still sees it);
  `lang:xx` → langs; `since:WHEN` / `until:WHEN` (a date `2024-05-01`, a moment
  `2024-05-01T10:00Z`, or an age `6h`, `3d`, `2w`) → the window; `"a phrase"` (straight or curly
  quotes) → words a post must contain. A malformed operator (`since:soon`, `lang:klingon`,
  `from:` with nothing) or a contradictory pair (`since:` after `until:`) raises
  `QueryNotUnderstood` with a sentence saying what to type.
- **Time words are preferences, never filters.** "right now", "today", "this morning",
  "latest", "this week" … set `prefer_within` (the span the words mean) and a `half_life`; the
  ranker then favours posts inside that span, and a relevant older post can still rank. The
  words are read in the asker's time zone (`zone`: the browser's in the widget, the local zone in
  the CLI); without one (Discord) "today" and "this morning" are rolling windows.

  | words | preferred span | half-life |
  |---|---|---|
  | right now, just now, at the moment, currently, breaking | 12 h | 1 h |
  | last/past N minutes/hours/days/weeks (N: 3, a, few …) | that span | span / 4, ≥ 10 min |
  | today | since local midnight (at least 6 h) | 4 h |
  | this morning / afternoon / evening, tonight | since local 00:00 / 12:00 / 17:00 (≥ 6 h) | 3 h |
  | yesterday | 48 h | 12 h |
  | this week / month / year | 7 / 31 / 365 days | 2 d / 7 d / 30 d |
  | lately, recently, latest, these days, most recent, newest | 3 days | 12 h |
  | since yesterday / monday … sunday / YYYY-MM-DD | since that local day | span / 4 |
  | since the X, since his/her/their X (an event) | resolved by the searcher (below) | 6 h |

- "since the keynote": an *event phrase* (`since` followed by the/his/her/their/its/our and up to
  six words). `ParsedQuery.event` carries the phrase and `event_start` resolves it against the
  index: it searches the phrase (hybrid, no decay) over the 7 days before `now`, keeps the
  *strong* matches (dense similarity at least 0.8 × the best one's and ≥ 0.35, or among the 3
  best BM25 scores when no dense score is known) and takes the earliest as when the feed started
  on it. The searcher prefers posts after that moment; it never drops the ones before.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

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
    """A query split into what to rank on, hard filters and soft recency preferences.

    `since`/`until`/`authors`/`hashtags`/`langs`/`phrases` come only from explicit operators.
    `prefer_within` and `half_life` come from time words and only reorder. `text` is never
    empty when `original` is not: if removing time words and operators leaves nothing, it falls
    back to the operator words (handles, tags) or the original text.
    """

    text: str
    original: str
    since: datetime | None = None
    until: datetime | None = None
    half_life: timedelta | None = None
    prefer_within: timedelta | None = None
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
            or self.prefer_within
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

_FROM = re.compile(r"(?<![\w:/])from:(\S*)", re.IGNORECASE)
_HANDLE = re.compile(r"@?([\w.@:-]*\w)")
_LANG = re.compile(r"(?<![\w:/])lang:(\S*)", re.IGNORECASE)
_LANG_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})?", re.IGNORECASE)
_WINDOW_OP = re.compile(r"(?<![\w:/])(since|until):(\S*)", re.IGNORECASE)
_AGE = re.compile(r"(\d{1,6})\s*(m|min|h|d|w)", re.IGNORECASE)
_AGE_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
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


def _midnight(moment: datetime, zone: tzinfo | None) -> datetime:
    """The start of `moment`'s day in `zone` (UTC without one), as a UTC instant."""
    local = moment.astimezone(zone or UTC)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


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


def _moment(op: str, value: str, now: datetime) -> datetime:
    """The instant a `since:`/`until:` value names: an age back from `now`, or a date/time."""
    age = _AGE.fullmatch(value)
    if age:
        span = timedelta(seconds=int(age[1]) * _AGE_UNITS[age[2].lower()])
        if span > MAX_WINDOW:
            raise QueryNotUnderstood(f"{op}:{value} is more than 30 years ago")
        return now - span
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryNotUnderstood(
            f"{op}:{value or '…'} is not a time; use a date (2024-05-01), a moment "
            "(2024-05-01T10:00Z) or an age (6h, 3d, 2w)"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if now - moment > MAX_WINDOW:
        raise QueryNotUnderstood(f"{op}:{value} is more than 30 years ago")
    return moment


def _operators(
    text: str, now: datetime
) -> tuple[str, dict[str, list[str]], datetime | None, datetime | None]:
    """Take the explicit operators out of `text`; raise on a malformed one."""
    found: dict[str, list[str]] = {"authors": [], "langs": [], "hashtags": [], "phrases": []}
    bounds: dict[str, datetime] = {}

    def on_from(m: re.Match[str]) -> str:
        handle = _HANDLE.fullmatch(m[1])
        if not handle:
            raise QueryNotUnderstood("from: wants a handle, e.g. from:alice.bsky.social")
        found["authors"].append(handle[1])
        return " "

    def on_lang(m: re.Match[str]) -> str:
        if not _LANG_CODE.fullmatch(m[1]):
            raise QueryNotUnderstood(
                f"lang:{m[1] or '…'} is not a language code; use one like en, pt or pt-br"
            )
        found["langs"].append(m[1].lower())
        return " "

    def on_window(m: re.Match[str]) -> str:
        op = m[1].lower()
        moment = _moment(op, m[2], now)
        bounds[op] = max(bounds[op], moment) if op == "since" and op in bounds else moment
        if op == "until" and op in bounds:
            bounds[op] = min(bounds[op], moment)
        return " "

    def on_tag(m: re.Match[str]) -> str:
        found["hashtags"].append(m[1].lower())
        return m[1]

    def on_phrase(m: re.Match[str]) -> str:
        phrase = " ".join((m[1] or m[2] or "").split())
        if phrase:
            found["phrases"].append(phrase)
        return f" {phrase} "

    text = _FROM.sub(on_from, text)
    text = _LANG.sub(on_lang, text)
    text = _WINDOW_OP.sub(on_window, text)
    text = _PHRASE.sub(on_phrase, text)
    text = _TAG.sub(on_tag, text)
    since, until = bounds.get("since"), bounds.get("until")
    if since is not None and since > now:
        raise QueryNotUnderstood(f"since: is in the future (now is {now:%Y-%m-%d %H:%M} UTC)")
    if since is not None and until is not None and since >= until:
        raise QueryNotUnderstood("since: is not before until:, so nothing can match")
    return text, found, since, until


def parse_query(text: str, now: datetime, zone: tzinfo | None = None) -> ParsedQuery:
    """Split `text` into ranking text, operator filters and recency preferences, as of `now`.

    `zone` is the asker's time zone for "today", "this morning", "yesterday", "since monday";
    without one those are read in UTC as rolling spans. Raises `QueryNotUnderstood` for a
    malformed or contradictory operator, or a span that cannot be meant (longer than 30
    years). Never raises for anything else: unknown words stay in the text.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    original = text
    text, found, since, until = _operators(clean_text(text), now)
    words: list[str] = []
    prefer: timedelta | None = None
    half_life: timedelta | None = None
    event: str | None = None

    def favour(span: timedelta, hl: timedelta) -> None:
        # Several time words: the narrowest span and the shortest half-life win.
        nonlocal prefer, half_life
        prefer = span if prefer is None else min(prefer, span)
        half_life = hl if half_life is None else min(half_life, hl)

    def since_local(hour: int) -> timedelta:
        start = _midnight(now, zone) + timedelta(hours=hour)
        return max(now - start, timedelta(hours=6))

    def take(pattern: re.Pattern[str], handle: Callable[[re.Match[str]], str]) -> None:
        nonlocal text
        text = pattern.sub(handle, text)

    def on_last_n(m: re.Match[str]) -> str:
        window = _count(m[1]) * _unit(m[2])
        if window > MAX_WINDOW:
            raise QueryNotUnderstood(
                f"{m[0].strip()!r} is a window longer than 30 years; no feed goes back that far"
            )
        if window <= timedelta(0):
            raise QueryNotUnderstood(f"{m[0].strip()!r} is an empty window")
        words.append(m[0].strip())
        favour(window, _half_of(window))
        return " "

    def on_word(span: timedelta, hl: timedelta) -> Callable[[re.Match[str]], str]:
        def handle(m: re.Match[str]) -> str:
            words.append(m[0].strip())
            favour(span, hl)
            return " "

        return handle

    def on_today(m: re.Match[str]) -> str:
        return on_word(since_local(0), timedelta(hours=4))(m)

    def on_part(m: re.Match[str]) -> str:
        part = (m[1] or m[2] or "").lower()
        hour = {"morning": 0, "afternoon": 12, "evening": 17, "tonight": 17}[part]
        return on_word(since_local(hour), timedelta(hours=3))(m)

    def on_this(m: re.Match[str]) -> str:
        span, hl = {
            "week": (timedelta(days=7), timedelta(days=2)),
            "month": (timedelta(days=31), timedelta(days=7)),
            "year": (timedelta(days=365), timedelta(days=30)),
        }[m[1].lower()]
        return on_word(span, hl)(m)

    def on_since_day(m: re.Match[str]) -> str:
        word = m[1].lower()
        if word == "yesterday":
            start = _midnight(now, zone) - timedelta(days=1)
        elif word in _WEEKDAYS:
            local = now.astimezone(zone or UTC)
            back = (local.weekday() - _WEEKDAYS.index(word)) % 7 or 7
            start = _midnight(now, zone) - timedelta(days=back)
        else:
            try:
                start = datetime.fromisoformat(word).replace(tzinfo=zone or UTC)
            except ValueError:
                return m[0]  # "since 2024-13-45": not a date, leave it as words
            if start > now:
                raise QueryNotUnderstood(f"{m[0]!r} is in the future (now is {now:%Y-%m-%d})")
            if now - start > MAX_WINDOW:
                raise QueryNotUnderstood(f"{m[0]!r} is more than 30 years ago")
        return on_word(now - start, _half_of(now - start))(m)

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
    take(_NOW, on_word(timedelta(hours=12), timedelta(hours=1)))
    take(_PART_OF_DAY, on_part)
    take(_TODAY, on_today)
    take(_YESTERDAY, on_word(timedelta(hours=48), timedelta(hours=12)))
    take(_THIS, on_this)
    take(_SINCE_DAY, on_since_day)
    take(_SINCE_EVENT, on_since_event)
    take(_LATELY, on_word(timedelta(days=3), timedelta(hours=12)))
    if event is not None and half_life is None:
        half_life = EVENT_HALF_LIFE

    ranked = " ".join(text.split()).strip(" ,;:?!-")
    if not ranked:
        # "from:alice today": nothing left to rank on; the operator words are the best text.
        ranked = " ".join([*found["authors"], *found["hashtags"], *found["phrases"]]) or " ".join(
            clean_text(original).split()
        )
    return ParsedQuery(
        text=ranked,
        original=original,
        since=since,
        until=until,
        half_life=half_life,
        prefer_within=prefer,
        authors=tuple(dict.fromkeys(found["authors"])),
        hashtags=tuple(dict.fromkeys(found["hashtags"])),
        langs=tuple(dict.fromkeys(found["langs"])),
        phrases=tuple(dict.fromkeys(found["phrases"])),
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
