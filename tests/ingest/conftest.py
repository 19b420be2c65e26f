"""Paths of the real-data fixtures the source tests read, and loaders for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
JETSTREAM_CAPTURE = FIXTURES / "jetstream_v1_capture_2026-07-04.jsonl"
JETSTREAM_GOLDEN = FIXTURES / "jetstream_v1_golden_2026-05-25.jsonl"
MASTODON_RAW = FIXTURES / "mastodon_statuses.raw.jsonl"
MASTODON_NORMALIZED = FIXTURES / "mastodon_statuses.normalized.jsonl"
CRISIS_8 = FIXTURES / "crisislex_8_consecutive.jsonl"
FEED_RSS = FIXTURES / "feed.rss.xml"
FEED_ATOM = FIXTURES / "feed.atom.xml"


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a JSON Lines file. Splits on \\n only: `str.splitlines`
    also splits on U+2028 and friends, which real posts contain inside JSON strings."""
    return [line for line in path.read_text("utf-8").split("\n") if line.strip()]


@pytest.fixture
def capture_lines() -> list[str]:
    """The 152 events of the verbatim Jetstream capture, one JSON text each."""
    return read_lines(JETSTREAM_CAPTURE)


@pytest.fixture
def golden_lines() -> list[str]:
    return read_lines(JETSTREAM_GOLDEN)


@pytest.fixture
def mastodon_statuses() -> list[dict[str, Any]]:
    """28 verbatim Mastodon Status entities, in id order."""
    return [json.loads(line) for line in read_lines(MASTODON_RAW)]


@pytest.fixture
def mastodon_normalized() -> dict[str, dict[str, Any]]:
    """The same statuses in the shared data's normalised form, by uri."""
    rows = [json.loads(line) for line in read_lines(MASTODON_NORMALIZED)]
    return {row["id"]: row for row in rows}
