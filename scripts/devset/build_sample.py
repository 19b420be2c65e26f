"""Rebuild the retrieval dev set (posts.jsonl + queries.jsonl) from /work/shared/data.

    python scripts/devset/build_sample.py [--data ../shared/data] [--out retrieval/devset]

Deterministic (fixed seed). Only Bluesky, Mastodon and CrisisLex posts (MIT); never the
airline tweets. How each query's relevant posts are chosen is in README.md next to this file.
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retrieval.post import Post

SEED = 20240523
BLUESKY_FILE = "bluesky/bluesky_posts_2024-05-01_to_05-23.jsonl"
MASTODON_FILE = "mastodon/mastodon_statuses.normalized.jsonl"
CRISIS_FILE = "crisis/crisislex_dev_events.jsonl.gz"
BLUESKY_TARGET = 1_000
# Per CrisisLexT26 event: informative, related-not-informative, unrelated tweets kept.
CRISIS_PER_EVENT = (55, 20, 10)
SANDY_ON_OFF = (60, 20)
RELATED = {"Related and informative", "Related - but not informative"}
_HASHTAG = re.compile(r"(?<![\w&])#(\w{1,64})")

Rule = Callable[[dict[str, Any]], bool]


@dataclass
class QuerySpec:
    kind: str
    query: str
    now: str  # RFC 3339, or "crisis:<topic>" resolved from the sampled posts
    rule: Rule
    window_days: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def crisis(topic: str, types: Iterable[str] | None = None) -> Rule:
    wanted = set(types) if types else None

    def match(p: dict[str, Any]) -> bool:
        if p.get("topic") != topic:
            return False
        labels = p.get("_labels") or {}
        if "informativeness" in labels:
            if labels["informativeness"] not in RELATED:
                return False
            return wanted is None or labels.get("information_type") in wanted
        return wanted is None and labels.get("on_topic") is True

    return match


def words(pattern: str, source: str | None = None) -> Rule:
    rx = re.compile(pattern, re.I)

    def match(p: dict[str, Any]) -> bool:
        if source and not str(p.get("source", "")).startswith(source):
            return False
        return bool(rx.search(p["text"]))

    return match


def author(handle: str) -> Rule:
    return lambda p: p.get("author") == handle


BS = "bluesky"
MA = "mastodon"
ALITO = r"alito|upside[- ]down (us |american )?flag|appeal to heaven"
SCOTUS = r"supreme court|scotus|alito|clarence thomas|justice thomas"
ALBINI = r"albini|shellac|big black"
WORM = r"brain ?worm|\bworms?\b"
RIO = r"rio grande do sul|enchente|\bga[uú]ch|porto alegre|\bRS\b"
DRAKE = r"\bdrake\b|kendrick|not like us|\bkdot\b|family matters"
CAMPUS = r"campus|encampment|columbia|ucla|student protest|protesters|students"
GAZA = r"gaza|rafah|palestin"
AI = r"\bai\b|chatgpt|openai|\bllms?\b|generative|\bgpt"
CATS = r"\bcats?\b|kitten|kitty"
METGALA = r"met gala"
TRIAL = r"stormy|hush money|trump trial|michael cohen|merchan|\bcohen\b"
BIDEN = r"biden"
TWITTER_MOVE = r"twitter|elon|musk|birdsite|migrat|\binstance"
RSTATS = r"#rstats|\brstats\b|\bcran\b|\bR package|\bggplot|tidyverse|\bquarto\b"
EMACS = r"emacs|org-mode|\belisp\b"
ARCH = r"arch ?linux|pacman|\baur\b|archlinux"

QUERIES: list[QuerySpec] = [
    # --- events (CrisisLex): relevant = the event's tweets the crowd judged related --------
    QuerySpec(
        "event",
        "earthquake in Costa Rica",
        "crisis:2012_costa_rica_earthquake",
        crisis("2012_costa_rica_earthquake"),
    ),
    QuerySpec(
        "topic-now",
        "is everyone ok after the quake?",
        "crisis:2012_costa_rica_earthquake",
        crisis("2012_costa_rica_earthquake"),
    ),
    QuerySpec(
        "event",
        "terremoto emilia",
        "crisis:2012_italy_earthquakes",
        crisis("2012_italy_earthquakes"),
    ),
    QuerySpec(
        "topic-now",
        "earthquake damage",
        "crisis:2012_italy_earthquakes",
        crisis("2012_italy_earthquakes"),
    ),
    QuerySpec(
        "event",
        "floods in manila philippines",
        "crisis:2012_philipinnes_floods",
        crisis("2012_philipinnes_floods"),
    ),
    QuerySpec(
        "topic-now",
        "flood warnings",
        "crisis:2012_philipinnes_floods",
        crisis("2012_philipinnes_floods"),
    ),
    QuerySpec("event", "typhoon pablo", "crisis:2012_typhoon_pablo", crisis("2012_typhoon_pablo")),
    QuerySpec(
        "event", "bopha mindanao damage", "crisis:2012_typhoon_pablo", crisis("2012_typhoon_pablo")
    ),
    QuerySpec(
        "info",
        "how to donate to typhoon victims",
        "crisis:2012_typhoon_pablo",
        crisis("2012_typhoon_pablo", ["Donations and volunteering"]),
    ),
    QuerySpec(
        "event",
        "venezuela refinery explosion",
        "crisis:2012_venezuela_refinery",
        crisis("2012_venezuela_refinery"),
    ),
    QuerySpec(
        "event", "amuay fire", "crisis:2012_venezuela_refinery", crisis("2012_venezuela_refinery")
    ),
    QuerySpec(
        "event", "hurricane sandy", "crisis:2012_sandy_hurricane", crisis("2012_sandy_hurricane")
    ),
    QuerySpec(
        "misspelled",
        "hurricane sandi power out nyc",
        "crisis:2012_sandy_hurricane",
        crisis("2012_sandy_hurricane"),
    ),
    QuerySpec(
        "slang", "frankenstorm lol", "crisis:2012_sandy_hurricane", crisis("2012_sandy_hurricane")
    ),
    QuerySpec(
        "event", "alberta floods", "crisis:2013_alberta_floods", crisis("2013_alberta_floods")
    ),
    QuerySpec("slang", "yyc flood", "crisis:2013_alberta_floods", crisis("2013_alberta_floods")),
    QuerySpec(
        "info",
        "how can I help the flood victims",
        "crisis:2013_alberta_floods",
        crisis("2013_alberta_floods", ["Donations and volunteering"]),
    ),
    QuerySpec(
        "event",
        "boston marathon explosions",
        "crisis:2013_boston_bombings",
        crisis("2013_boston_bombings"),
    ),
    QuerySpec(
        "slang",
        "wtf happened at the marathon",
        "crisis:2013_boston_bombings",
        crisis("2013_boston_bombings"),
    ),
    QuerySpec(
        "topic-now",
        "what are people saying about the explosion",
        "crisis:2013_boston_bombings",
        crisis("2013_boston_bombings"),
    ),
    QuerySpec(
        "event",
        "nightclub fire in brazil",
        "crisis:2013_brazil_nightclub_fire",
        crisis("2013_brazil_nightclub_fire"),
    ),
    QuerySpec(
        "event",
        "incendio boate kiss santa maria",
        "crisis:2013_brazil_nightclub_fire",
        crisis("2013_brazil_nightclub_fire"),
    ),
    QuerySpec(
        "topic-now",
        "fire death toll",
        "crisis:2013_brazil_nightclub_fire",
        crisis("2013_brazil_nightclub_fire"),
    ),
    QuerySpec(
        "event",
        "helicopter crashed into a pub in glasgow",
        "crisis:2013_glasgow_helicopter_crash",
        crisis("2013_glasgow_helicopter_crash"),
    ),
    QuerySpec(
        "event",
        "clutha bar",
        "crisis:2013_glasgow_helicopter_crash",
        crisis("2013_glasgow_helicopter_crash"),
    ),
    QuerySpec(
        "event", "meteor in russia", "crisis:2013_russia_meteor", crisis("2013_russia_meteor")
    ),
    QuerySpec(
        "misspelled",
        "chelyabinsk meteorit video",
        "crisis:2013_russia_meteor",
        crisis("2013_russia_meteor"),
    ),
    QuerySpec(
        "topic-now",
        "fireball in the sky",
        "crisis:2013_russia_meteor",
        crisis("2013_russia_meteor"),
    ),
    QuerySpec(
        "event",
        "building collapse in bangladesh",
        "crisis:2013_savar_building_collapse",
        crisis("2013_savar_building_collapse"),
    ),
    QuerySpec(
        "event",
        "rana plaza garment factory",
        "crisis:2013_savar_building_collapse",
        crisis("2013_savar_building_collapse"),
    ),
    QuerySpec(
        "info",
        "people trapped injured or killed",
        "crisis:2013_savar_building_collapse",
        crisis("2013_savar_building_collapse", ["Affected individuals"]),
    ),
    QuerySpec(
        "event",
        "train crash in spain",
        "crisis:2013_spain_train_crash",
        crisis("2013_spain_train_crash"),
    ),
    QuerySpec(
        "event",
        "santiago de compostela derailment",
        "crisis:2013_spain_train_crash",
        crisis("2013_spain_train_crash"),
    ),
    QuerySpec(
        "info",
        "prayers and condolences",
        "crisis:2013_spain_train_crash",
        crisis("2013_spain_train_crash", ["Sympathy and support"]),
    ),
    QuerySpec(
        "event",
        "colorado wildfire",
        "crisis:2012_colorado_wildfires",
        crisis("2012_colorado_wildfires"),
    ),
    QuerySpec(
        "event",
        "waldo canyon fire evacuation",
        "crisis:2012_colorado_wildfires",
        crisis("2012_colorado_wildfires"),
    ),
    QuerySpec(
        "info",
        "road closures and evacuation advice",
        "crisis:2012_colorado_wildfires",
        crisis("2012_colorado_wildfires", ["Caution and advice"]),
    ),
    # --- Bluesky, May 2024: relevant = keyword rule (checked by reading) within a window -----
    QuerySpec("topic-now", "alito flag", "2024-05-23T20:00:00Z", words(ALITO, BS), 3),
    QuerySpec(
        "what-are-people-saying",
        "what are people saying about the supreme court",
        "2024-05-23T20:00:00Z",
        words(SCOTUS, BS),
        3,
    ),
    QuerySpec(
        "topic-now",
        "justice flying an upside down flag",
        "2024-05-23T20:00:00Z",
        words(ALITO, BS),
        3,
    ),
    QuerySpec("person-news", "steve albini", "2024-05-08T23:59:00Z", words(ALBINI, BS), 3),
    QuerySpec(
        "topic-now",
        "RIP to the guy who recorded nirvana",
        "2024-05-08T23:59:00Z",
        words(ALBINI, BS),
        3,
    ),
    QuerySpec("topic-now", "rfk brain worm", "2024-05-08T23:59:00Z", words(WORM, BS), 3),
    QuerySpec("slang", "the worm ate his brain lmao", "2024-05-08T23:59:00Z", words(WORM, BS), 3),
    QuerySpec("event", "enchentes no rio grande do sul", "2024-05-08T23:59:00Z", words(RIO, BS), 7),
    QuerySpec("event", "floods in southern brazil", "2024-05-08T23:59:00Z", words(RIO, BS), 7),
    QuerySpec("topic-now", "drake kendrick beef", "2024-05-06T23:59:00Z", words(DRAKE, BS), 5),
    QuerySpec(
        "slang", "not like us diss track goes hard", "2024-05-06T23:59:00Z", words(DRAKE, BS), 5
    ),
    QuerySpec(
        "topic-now", "campus protests and encampments", "2024-05-03T23:59:00Z", words(CAMPUS, BS), 3
    ),
    QuerySpec(
        "what-are-people-saying",
        "what are people saying about cops arresting students",
        "2024-05-03T23:59:00Z",
        words(CAMPUS, BS),
        3,
    ),
    QuerySpec("topic-now", "gaza rafah", "2024-05-08T23:59:00Z", words(GAZA, BS), 3),
    QuerySpec(
        "what-are-people-saying",
        "what are people saying about biden",
        "2024-05-23T20:00:00Z",
        words(BIDEN, BS),
        3,
    ),
    QuerySpec("topic-now", "AI slop", "2024-05-23T20:00:00Z", words(AI, BS), 3),
    QuerySpec("topic-now", "cat pics", "2024-05-23T20:00:00Z", words(CATS, BS), 3),
    QuerySpec("event", "met gala looks", "2024-05-07T23:59:00Z", words(METGALA, BS), 3),
    QuerySpec(
        "event",
        "trump hush money trial stormy daniels",
        "2024-05-08T23:59:00Z",
        words(TRIAL, BS),
        3,
    ),
    # --- a person's recent posts: relevant = that account's posts in the window -----------
    QuerySpec(
        "person",
        "what has Kevin Kruse been posting",
        "2024-05-23T23:59:00Z",
        author("kevinmkruse.bsky.social"),
        3,
    ),
    QuerySpec(
        "person", "latest from popehat", "2024-05-23T23:59:00Z", author("kenwhite.bsky.social"), 3
    ),
    QuerySpec("person", "john scalzi", "2024-05-08T23:59:00Z", author("scalzi.com"), 3),
    QuerySpec(
        "person",
        "what is marisa kabas posting",
        "2024-05-23T23:59:00Z",
        author("marisakabas.bsky.social"),
        3,
    ),
    QuerySpec(
        "person",
        "what is lula saying",
        "2024-05-08T23:59:00Z",
        author("lulaoficial.bsky.social"),
        7,
    ),
    QuerySpec(
        "person",
        "schochastics toots",
        "2025-07-31T23:59:00Z",
        author("schochastics@fosstodon.org"),
        365,
    ),
    QuerySpec(
        "person",
        "chainsawriot",
        "2022-12-31T23:59:00Z",
        author("chainsawriot@social.tchncs.de"),
        60,
    ),
    # --- Mastodon -------------------------------------------------------------------------
    QuerySpec("topic-now", "rstats packages", "2024-10-31T23:59:00Z", words(RSTATS, MA), 365),
    QuerySpec(
        "what-are-people-saying",
        "leaving twitter for mastodon",
        "2022-11-30T23:59:00Z",
        words(TWITTER_MOVE, MA),
        30,
    ),
    QuerySpec("topic-now", "emacs config", "2022-12-31T23:59:00Z", words(EMACS, MA), 60),
    QuerySpec(
        "topic-now", "arch linux package updates", "2022-11-30T23:59:00Z", words(ARCH, MA), 30
    ),
]


def _tags(text: str) -> list[str]:
    return _HASHTAG.findall(text)


def _post(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A record in the canonical Post JSON form, plus private `_labels` used only here."""
    fields = {k: record.get(k) for k in Post.model_fields if record.get(k) is not None}
    fields.update({k: v for k, v in extra.items() if v is not None})
    post = Post.model_validate(fields)
    out: dict[str, Any] = json.loads(post.to_jsonl())
    if not out.get("hashtags"):
        out.pop("hashtags", None)  # an empty list is the default; keep the file small
    out["_labels"] = record.get("labels") or {}
    return out


def load_sources(data: Path) -> tuple[list[dict[str, Any]], ...]:
    with (data / BLUESKY_FILE).open() as f:
        bluesky = [json.loads(line) for line in f]
    with (data / MASTODON_FILE).open() as f:
        mastodon = [json.loads(line) for line in f]
    with gzip.open(data / CRISIS_FILE, "rt") as f:
        crisis_rows = [json.loads(line) for line in f]
    return bluesky, mastodon, crisis_rows


def select_posts(data: Path) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    bluesky, mastodon, crisis_rows = load_sources(data)
    posts: list[dict[str, Any]] = []

    # CrisisLex: a stratified sample per event, so every label kind is present.
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for row in crisis_rows:
        by_topic.setdefault(row["topic"], []).append(row)
    for topic in sorted(by_topic):
        rows = sorted(by_topic[topic], key=lambda r: r["id"])
        t26 = [r for r in rows if "informativeness" in r["labels"]]
        chosen: list[dict[str, Any]] = []
        if t26:
            informative = [
                r for r in t26 if r["labels"]["informativeness"] == "Related and informative"
            ]
            # Round-robin over information types keeps small types (donations, advice) in.
            by_type: dict[str, list[dict[str, Any]]] = {}
            for r in informative:
                by_type.setdefault(r["labels"]["information_type"], []).append(r)
            for bucket in by_type.values():
                rng.shuffle(bucket)
            picked: list[dict[str, Any]] = []
            while len(picked) < CRISIS_PER_EVENT[0] and any(by_type.values()):
                for key in sorted(by_type):
                    if by_type[key] and len(picked) < CRISIS_PER_EVENT[0]:
                        picked.append(by_type[key].pop())
            chosen += picked
            other = [
                r for r in t26 if r["labels"]["informativeness"] == "Related - but not informative"
            ]
            chosen += rng.sample(other, min(CRISIS_PER_EVENT[1], len(other)))
            unrelated = [r for r in t26 if r["labels"]["informativeness"] == "Not related"]
            chosen += rng.sample(unrelated, min(CRISIS_PER_EVENT[2], len(unrelated)))
        else:
            on = [r for r in rows if r["labels"].get("on_topic") is True]
            off = [r for r in rows if r["labels"].get("on_topic") is False]
            chosen += rng.sample(on, SANDY_ON_OFF[0]) + rng.sample(off, SANDY_ON_OFF[1])
        for r in chosen:
            posts.append(_post(r, text=html.unescape(r["text"]), hashtags=_tags(r["text"])))

    # Bluesky: every post some query's rule is about, the named accounts, then a random fill.
    rules = [q.rule for q in QUERIES]
    wanted = [
        r
        for r in bluesky
        if r["text"].strip() and any(rule(dict(r, source="bluesky")) for rule in rules)
    ]
    wanted_ids = {r["id"] for r in wanted}
    rest = [r for r in bluesky if r["id"] not in wanted_ids and r["text"].strip()]
    fill = rng.sample(rest, max(0, BLUESKY_TARGET - len(wanted)))
    for r in sorted(wanted + fill, key=lambda r: r["created_at"]):
        posts.append(
            _post(
                r,
                source="bluesky_most_liked",
                author_id=r.get("author_did"),
                hashtags=_tags(r["text"]),
            )
        )

    # Mastodon: all of it (it is small); the acct is the stable author id there.
    for r in mastodon:
        if r["text"].strip():
            posts.append(_post(r, author_id=r.get("author")))
    return posts


def resolve_now(spec: QuerySpec, posts: list[dict[str, Any]]) -> str:
    if not spec.now.startswith("crisis:"):
        return spec.now
    topic = spec.now.split(":", 1)[1]
    times = sorted(p["created_at"] for p in posts if crisis(topic)(p))
    # Three quarters into the event: some of it has happened, some is still "future".
    moment = datetime.fromisoformat(times[(3 * len(times)) // 4]) + timedelta(minutes=1)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def label(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    queries = []
    for spec in QUERIES:
        now = resolve_now(spec, posts)
        now_dt = datetime.fromisoformat(now)
        start = now_dt - timedelta(days=spec.window_days) if spec.window_days else None
        relevant = [
            p["id"]
            for p in posts
            if spec.rule(p)
            and datetime.fromisoformat(p["created_at"]) <= now_dt
            and (start is None or datetime.fromisoformat(p["created_at"]) >= start)
        ]
        if not relevant:
            raise SystemExit(f"query {spec.query!r} has no relevant posts; fix its rule")
        queries.append({"query": spec.query, "now": now, "kind": spec.kind, "relevant": relevant})
    return queries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    posts = select_posts(args.data)
    queries = label(posts)
    posts.sort(key=lambda p: (p["created_at"], p["id"]))
    with (args.out / "posts.jsonl").open("w") as f:
        for p in posts:
            p.pop("_labels", None)
            f.write(json.dumps(p, ensure_ascii=False, separators=(",", ":")) + "\n")
    with (args.out / "sample_queries.jsonl").open("w") as f:
        for q in queries:
            f.write(json.dumps(q, ensure_ascii=False, separators=(",", ":")) + "\n")
    size = (args.out / "posts.jsonl").stat().st_size
    print(f"{len(posts)} posts ({size / 1e6:.2f} MB), {len(queries)} queries")
    for q in queries:
        print(f"  {len(q['relevant']):4d} relevant  {q['kind']:<24} {q['query']}")


if __name__ == "__main__":
    main()
