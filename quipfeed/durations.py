"""Human time spans on the command line: `90s`, `30m`, `6h`, `7d`, `2w`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
# No feed keeps posts longer than this; a wider window is a typo, not a question.
MAX_SPAN = timedelta(days=3650)


def parse_span(text: str) -> timedelta:
    """`6h` → 6 hours. Raises ValueError with a message a person can act on."""
    match = _SPAN.match(text)
    if not match:
        raise ValueError(f"not a time span: {text!r} (use e.g. 90s, 30m, 6h, 7d, 2w)")
    span = timedelta(seconds=float(match[1]) * _UNIT_S[match[2].lower()])
    if span <= timedelta(0):
        raise ValueError(f"time span must be positive: {text!r}")
    if span > MAX_SPAN:
        raise ValueError(f"time span too large: {text!r} (at most {MAX_SPAN.days}d)")
    return span


def parse_instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 timestamp; a naive one is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a timestamp: {text!r} (use e.g. 2024-05-08T12:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
