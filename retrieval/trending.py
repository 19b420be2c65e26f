"""Trending topics: what the feed says much more of in a window than it usually does.

Counting happens as posts are indexed (`TrendCounter.record`), into time buckets in Redis
keyed by each post's own `created_at`, so replays of old data trend as they did live and
a query (`TrendCounter.trending`) only sums a few sorted sets. Topics are hashtags,
cashtags and capitalised phrases ("Met Gala", "Costa Rica"), a cheap stand-in for named
entities that works across languages written in Latin script.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from retrieval.post import Post

BUCKET_S = 300
# Buckets outlive the longest baseline we compare against; TTLs count from the write, so
# replayed old data is not expired on arrival.
KEEP_S = 9 * 86400
SAMPLES_PER_BUCKET = 4
MAX_TOPICS_PER_POST = 12

_CAP_WORD = r"[A-Z][\w'’\-]*[A-Za-z0-9]|[A-Z]"
_PHRASE = re.compile(rf"(?<![\w#@$])((?:{_CAP_WORD})(?:\s+(?:{_CAP_WORD})){{0,2}})")
_TAG = re.compile(r"(?<![\w&])#(\w{2,64})", re.UNICODE)
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6})\b")
_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"(?<!\w)@[\w.\-]+")
# Capitalised words that start sentences or fill headlines, not topics in themselves.
_STOP = frozenset(
    """a an the i i'm im it it's its this that these those he she we they you my your our
    their his her me us them rt via and or but so if then when what why how who where which
    is are was were be been am do does did not no yes ok okay oh lol lmao omg just also
    here there now today tonight tomorrow yesterday new just please thanks thank good great
    breaking update watch read live video photo photos news in on at of to for from with by
    as about after before into over up out all any some more most very really still""".split()
)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def topics_of(post: Post) -> dict[str, str]:
    """The topics a post mentions: folded key → how to show it."""
    found: dict[str, str] = {}
    for tag in post.hashtags:
        found.setdefault(f"#{_fold(tag)}", f"#{tag}")
    text = _MENTION.sub(" ", _URL.sub(" ", post.text))
    for match in _TAG.finditer(text):
        found.setdefault(f"#{_fold(match[1])}", f"#{match[1]}")
    for match in _CASHTAG.finditer(text):
        found.setdefault(f"${match[1].upper()}", f"${match[1].upper()}")
    for sentence in re.split(r"[.!?\n:;]+", _TAG.sub(" ", text)):
        first = len(sentence) - len(sentence.lstrip())
        for match in _PHRASE.finditer(sentence):
            words = [w for w in match[1].split() if _fold(w) not in _STOP]
            if not words or (len(words) == 1 and len(words[0]) < 4):
                continue
            if len(words) == 1 and match.start() == first:
                continue  # one capitalised word opening a sentence says nothing by itself
            phrase = " ".join(words)
            found.setdefault(_fold(phrase), phrase)
    return dict(list(found.items())[:MAX_TOPICS_PER_POST])


def _sample(post: Post) -> str:
    """What a trend shows of a post that mentions it."""
    return json.dumps(
        {
            "id": post.id,
            "author": post.author,
            "text": post.text[:280],
            "url": post.url,
            "created_at": post.created_at.isoformat(),
        },
        ensure_ascii=False,
    )


@dataclass(frozen=True)
class Trend:
    topic: str
    label: str
    count: int
    expected: float
    growth: float | None  # None: the topic is new (no baseline to grow from)
    score: float
    posts: list[dict[str, Any]] = field(default_factory=list)


_RECORD = """
local batch = cjson.decode(ARGV[1])
local keep, n = tonumber(ARGV[2]), tonumber(ARGV[3])
for bucket, topics in pairs(batch.counts) do
  for topic, count in pairs(topics) do
    redis.call('ZINCRBY', bucket, count, topic)
  end
  redis.call('EXPIRE', bucket, keep)
end
for topic, label in pairs(batch.labels) do
  redis.call('HSETNX', KEYS[1], topic, label)
end
for key, items in pairs(batch.samples) do
  for _, item in ipairs(items) do
    redis.call('LPUSH', key, item)
  end
  redis.call('LTRIM', key, 0, n - 1)
  redis.call('EXPIRE', key, keep)
end
return 1
"""


class TrendCounter:
    """Topic counters in Redis (`redis.asyncio` client), bucketed by post time."""

    def __init__(
        self, client: Any, prefix: str = "quipfeed:trend", bucket_s: int = BUCKET_S
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.bucket_s = bucket_s

    def _bucket(self, moment: datetime) -> int:
        return int(moment.timestamp()) // self.bucket_s

    async def record(self, posts: Sequence[Post]) -> None:
        """Count a batch of posts. One round trip whatever the batch size: counts are summed
        here and applied by a server-side script (a command per post and topic cost more
        than embedding at firehose rates)."""
        counts: dict[str, dict[str, int]] = {}
        labels: dict[str, str] = {}
        kept: dict[str, list[Post]] = {}
        for post in posts:
            topics = topics_of(post)
            if not topics:
                continue
            bucket = f"{self.prefix}:{self._bucket(post.created_at)}"
            per_bucket = counts.setdefault(bucket, {})
            for key, label in topics.items():
                per_bucket[key] = per_bucket.get(key, 0) + 1
                labels.setdefault(key, label)
                newest = kept.setdefault(f"{bucket}:s:{key}", [])
                newest.append(post)
                del newest[:-SAMPLES_PER_BUCKET]  # only the newest few survive the LTRIM anyway
        if not counts:
            return
        # Serialised once per post that survives, not once per post (a batch of 512 keeps ~50).
        json_of: dict[int, str] = {}
        samples = {
            key: [json_of.get(id(p)) or json_of.setdefault(id(p), _sample(p)) for p in newest]
            for key, newest in kept.items()
        }
        batch = {"counts": counts, "labels": labels, "samples": samples}
        await self.client.eval(
            _RECORD,
            1,
            f"{self.prefix}:labels",
            json.dumps(batch, ensure_ascii=False),
            KEEP_S,
            SAMPLES_PER_BUCKET,
        )

    async def _window_counts(self, start: int, end: int) -> dict[str, float]:
        """Summed counts over buckets [start, end)."""
        totals: dict[str, float] = {}
        pipe = self.client.pipeline(transaction=False)
        for bucket in range(start, end):
            pipe.zrange(f"{self.prefix}:{bucket}", 0, -1, withscores=True)
        for rows in await pipe.execute():
            for member, score in rows:
                key = member.decode() if isinstance(member, bytes) else member
                totals[key] = totals.get(key, 0.0) + float(score)
        return totals

    async def trending(
        self,
        window: timedelta,
        now: datetime | None = None,
        *,
        limit: int = 10,
        baseline: timedelta | None = None,
        min_count: int = 3,
    ) -> list[Trend]:
        """Topics whose count in (now - window, now] stands out against the preceding
        `baseline` (default: 24 windows, at most 7 days), ranked by a Poisson-style score."""
        if window <= timedelta(0) or window > timedelta(days=7):
            raise ValueError("window must be between 1 second and 7 days")
        now = (now or datetime.now(UTC)).astimezone(UTC)
        baseline = baseline or min(window * 24, timedelta(days=7))
        end = self._bucket(now) + 1
        width = max(1, math.ceil(window.total_seconds() / self.bucket_s))
        base_width = max(1, math.ceil(baseline.total_seconds() / self.bucket_s))
        current = await self._window_counts(end - width, end)
        before = await self._window_counts(end - width - base_width, end - width)
        scale = width / base_width
        trends = []
        for key, count in current.items():
            if count < min_count:
                continue
            expected = before.get(key, 0.0) * scale
            # Poisson surprise with a floor of one expected mention: new topics rank by volume.
            score = (count - expected) / math.sqrt(max(expected, 1.0))
            if score <= 0:
                continue
            growth = count / expected if expected else None
            trends.append((score, key, count, expected, growth))
        trends.sort(key=lambda t: (-t[0], t[1]))
        top = trends[:limit]
        labels = (
            await self.client.hmget(f"{self.prefix}:labels", [t[1] for t in top]) if top else []
        )
        result = []
        for (score, key, count, expected, growth), label in zip(top, labels, strict=True):
            result.append(
                Trend(
                    topic=key,
                    label=(label.decode() if isinstance(label, bytes) else label) or key,
                    count=int(count),
                    expected=round(expected, 2),
                    growth=round(growth, 2) if growth is not None else None,
                    score=round(score, 2),
                    posts=await self._samples(key, end - width, end),
                )
            )
        return result

    async def _samples(self, key: str, start: int, end: int, want: int = 3) -> list[dict[str, Any]]:
        """A few recent posts that mention the topic, newest buckets first, one per author."""
        out: list[dict[str, Any]] = []
        authors: set[str | None] = set()
        for bucket in range(end - 1, start - 1, -1):
            for raw in await self.client.lrange(f"{self.prefix}:{bucket}:s:{key}", 0, -1):
                sample = json.loads(raw)
                if sample.get("author") in authors and sample.get("author") is not None:
                    continue
                authors.add(sample.get("author"))
                out.append(sample)
                if len(out) >= want:
                    return out
        return out
