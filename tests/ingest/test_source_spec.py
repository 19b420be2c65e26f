"""`open_source`: spec strings and options in, a source or a clear `SourceSpecError` out."""

from __future__ import annotations

import pytest

from ingest.sources import SourceSpecError
from ingest.sources.jetstream import JetstreamSource
from ingest.sources.jsonl import JsonlSource
from ingest.sources.mastodon import MastodonSource
from ingest.sources.rss import RssSource
from ingest.sources.spec import open_source, source_options
from tests.ingest.conftest import CRISIS_8


def test_each_prefix_builds_its_source_with_the_spec_as_its_key() -> None:
    cases = {
        "jetstream:wss://jetstream2.us-east.bsky.network/subscribe?lang=en": JetstreamSource,
        "mastodon:https://mastodon.social?tag=python": MastodonSource,
        "rss:https://example.org/feed.xml": RssSource,
        f"jsonl:{CRISIS_8}": JsonlSource,
    }
    for spec, kind in cases.items():
        source = open_source(spec)
        assert isinstance(source, kind) and source.spec == spec
    assert open_source(f"jsonl:{CRISIS_8}").finite
    assert not open_source("rss:https://example.org/feed.xml").finite
    assert open_source("rss:https://example.org/feed.xml", finite=True).finite


def test_jetstream_spec_keys_become_the_subscription_and_client_filters() -> None:
    source = open_source(
        "jetstream:wss://js.example/subscribe?lang=en-US&lang=de&did=did:plc:a&keyword=Rust"
    )
    assert isinstance(source, JetstreamSource)
    assert source.langs == {"en", "de"} and source.keywords == ["rust"]
    assert source.subscribe_url(1_000) == (
        "wss://js.example/subscribe?wantedCollections=app.bsky.feed.post"
        "&wantedDids=did%3Aplc%3Aa&cursor=1000"
    )


def test_mastodon_token_comes_from_the_option_or_the_spec() -> None:
    assert "token" in source_options("mastodon")
    source = open_source("mastodon:https://mastodon.social", token="abc")
    assert isinstance(source, MastodonSource) and source.tag is None
    assert source.stream_url == "https://mastodon.social/api/v1/streaming/public"
    tagged = open_source("mastodon:https://mastodon.social?tag=%23python")
    assert isinstance(tagged, MastodonSource)
    assert tagged.backfill_url == "https://mastodon.social/api/v1/timelines/tag/python"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "malformed"),
        ("jetstream", "malformed"),
        ("twitter:https://x.com", "unknown source 'twitter'"),
        ("jetstream:https://js.example/subscribe", "ws:// or wss://"),
        ("jetstream:wss://js.example/subscribe?did=alice", "did:"),
        ("jetstream:wss://js.example/subscribe?compress=maybe", "compress"),
        ("mastodon:mastodon.social", "http(s)"),
        ("mastodon:https://mastodon.social/@alice", "no path"),
        ("mastodon:https://mastodon.social?list=1", "unknown option"),
        ("rss:ftp://example.org/feed", "http(s)"),
        ("jsonl:/nonexistent/posts.jsonl", "not found"),
    ],
)
def test_bad_specs_are_explained(spec: str, message: str) -> None:
    with pytest.raises(SourceSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_source(spec)


def test_unknown_options_name_the_ones_accepted() -> None:
    with pytest.raises(SourceSpecError, match=r"takes \['speed', 'max_gap_s'\]"):
        open_source(f"jsonl:{CRISIS_8}", sped=2)
