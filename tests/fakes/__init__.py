"""Faithful local stand-ins for the feed servers quipfeed reads (Jetstream, Mastodon
streaming, RSS), on 127.0.0.1 and free ports, for any test that needs a live feed.

Each is an async context manager: `async with FakeJetstream(lines) as js: js.url …`.
"""

from tests.fakes.jetstream import FakeJetstream
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.rss import FakeFeed

__all__ = ["FakeFeed", "FakeJetstream", "FakeMastodon"]
