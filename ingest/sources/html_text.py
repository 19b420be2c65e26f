"""Status HTML (Mastodon `content`, RSS summaries) to plain text, plus the links in it.

Mastodon wraps paragraphs in `<p>`, breaks lines with `<br>`, and splits long URLs into
`<span class="invisible">` parts; the text keeps every part so a URL stays whole.
Hashtag and mention anchors are not counted as links.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK_END = {"p", "div", "blockquote", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr"}
_SKIP = {"script", "style", "template"}


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "a":
            attr = dict(attrs)
            href = attr.get("href") or ""
            classes = (attr.get("class") or "").split()
            rel = (attr.get("rel") or "").split()
            if (
                href.startswith(("http://", "https://"))
                and "mention" not in classes
                and "hashtag" not in classes
                and "tag" not in rel
            ):
                self.links.append(href)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_END:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> tuple[str, list[str]]:
    """Plain text (entities decoded, tags dropped, paragraphs as blank lines) and the
    http(s) links the HTML points at, in order, without duplicates."""
    parser = _TextParser()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):
        # html.parser gives up on a few pathological inputs; fall back to the raw text.
        return html.strip(), []
    text = "".join(parser.parts).replace("\r\n", "\n")
    text = _MANY_BLANK_LINES.sub("\n\n", text).strip()
    return text, list(dict.fromkeys(parser.links))
