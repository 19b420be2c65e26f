"""`open_source(spec, **options)`: the one way to build a feed source from a spec string.

jetstream:wss://jetstream2.us-east.bsky.network/subscribe?lang=en&keyword=rust
mastodon:https://mastodon.social?tag=python          (option: token=…)
rss:https://example.org/feed.xml                     (options: interval_s, finite)
jsonl:data/posts.jsonl.gz                            (options: speed, max_gap_s)
"""

from __future__ import annotations

import inspect
from typing import Any

from ingest.sources import Source, SourceSpecError
from ingest.sources.jetstream import JetstreamSource
from ingest.sources.jsonl import JsonlSource
from ingest.sources.mastodon import MastodonSource
from ingest.sources.rss import RssSource

SOURCES: dict[str, type[Any]] = {
    "jetstream": JetstreamSource,
    "mastodon": MastodonSource,
    "rss": RssSource,
    "jsonl": JsonlSource,
}


def source_options(prefix: str) -> list[str]:
    """The keyword options `open_source` accepts for a source kind."""
    params = inspect.signature(SOURCES[prefix].__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def open_source(spec: str, **options: Any) -> Source:
    """The source a spec names, built with `options`; raises `SourceSpecError` with a
    message fit for a user when the spec or an option is wrong."""
    if not isinstance(spec, str):
        raise SourceSpecError(f"a source spec is a string, got {type(spec).__name__}")
    prefix, colon, rest = spec.strip().partition(":")
    known = ", ".join(f"{name}:" for name in SOURCES)
    if not colon or not rest:
        raise SourceSpecError(f"malformed source spec {spec!r}: expected PREFIX:TARGET ({known})")
    factory = SOURCES.get(prefix)
    if factory is None:
        raise SourceSpecError(f"unknown source {prefix!r} in {spec!r}; known: {known}")
    accepted = source_options(prefix)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SourceSpecError(
            f"{prefix} source does not take option(s) {unknown}; it takes {accepted}"
        )
    source: Source = factory(spec.strip(), **options)
    return source
