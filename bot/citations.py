"""Citation markers `[n]` in a reply → links to the posts behind them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.models import Source
from bot.output import safe_url

# [1], [1, 3], [1][2]; not [text](url) link labels (a `(` right after the bracket).
MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()")
_SPACED_MARKER = re.compile(r"([ \t]*)" + MARKER.pattern)


def markers(text: str) -> list[int]:
    """Every number cited in `text`, in order, repeats included."""
    return [int(n) for m in MARKER.finditer(text) for n in m[1].split(",")]


def link_citations(text: str, sources: Sequence[Source]) -> tuple[str, list[Source]]:
    """Replace markers with Markdown links (`[2](url)`, or `[2]` for a post without a safe URL),
    drop numbers that point to no source, and return the cited sources in order of first use."""
    by_number = {s.number: s for s in sources}
    cited: list[Source] = []

    def replace(match: re.Match[str]) -> str:
        out = []
        for part in match[2].split(","):
            source = by_number.get(int(part))
            if source is None:
                continue
            if source not in cited:
                cited.append(source)
            url = safe_url(source.post.url)
            out.append(f"[{source.number}]({url})" if url else f"[{source.number}]")
        # A marker dropped entirely takes its leading space with it: no "word ." left behind.
        return match[1] + "".join(out) if out else ""

    return _SPACED_MARKER.sub(replace, text), cited
