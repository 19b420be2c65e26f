"""Model text made safe for a surface (terminal, Discord, web) before anyone sees it.

Model output is untrusted: a post in the context can talk a model into echoing `@everyone`, a
`javascript:` link or a `<script>` tag. `safe_text` neutralises those; `SafeStream` does the same
to a stream of deltas without emitting anything it might later have to take back.
"""

from __future__ import annotations

import re
import unicodedata

_ZWSP = "\u200b"  # breaks a mention for Discord while reading the same to a person
# Discord's mass mentions and its <@id>, <@!id>, <@&role>, <#channel> forms.
_MASS_MENTION = re.compile(r"@(everyone|here)\b", re.IGNORECASE)
_ID_MENTION = re.compile(r"<(@[!&]?|#)(\d+)>")
# HTML: comments, tags and processing instructions. Stray `<` before a letter stays visible but
# inert as a look-alike, so a surface that renders Markdown to HTML never sees a tag open.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_UNSAFE_URL = re.compile(r"(?i)\b(?:javascript|vbscript|data|file)\s*:[^\s)\]>\"']*")
SAFE_SCHEMES = ("http://", "https://")
# A Markdown link, and a host-like word in its label (`https://bank.example` or `bank.example`).
_MD_LINK = re.compile(r"\[([^\[\]\n]*)\]\((\S*?)\)")
_LABEL_HOST = re.compile(r"(?i)(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})\b")


def safe_text(text: str) -> str:
    """`text` with mentions neutralised, HTML removed and unsafe links replaced.

    Idempotent: `safe_text(safe_text(x)) == safe_text(x)`.
    """
    text = _invisible_removed(text)
    text = _HTML_COMMENT.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _TAG_OPEN.sub("‹", text)
    text = _UNSAFE_URL.sub("(unsafe link removed)", text)
    text = _MD_LINK.sub(_honest_link, text)
    text = _MASS_MENTION.sub(lambda m: f"@{_ZWSP}{m[1]}", text)
    text = _ID_MENTION.sub(lambda m: f"‹{m[1]}{_ZWSP}{m[2]}›", text)
    return text


def _honest_link(m: re.Match[str]) -> str:
    """A Markdown link whose label names a host other than the one it opens
    (`[https://bank.example](https://evil.example)`) is unlinked: `](` becomes `] (`, so both
    addresses show as text. Only the characters after the label change, so a stream that has
    already shown the label stays a prefix of the result."""
    label, target = m[1], m[2]
    target_host = target.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    for named in _LABEL_HOST.finditer(label):
        host = named[1].lower()
        if host != target_host and not target_host.endswith("." + host):
            return f"[{label}] ({target})"
    return m[0]


def _invisible_removed(text: str) -> str:
    """Control characters (terminal escapes) and invisible format characters (bidi
    overrides, zero-width, tag characters) dropped: what a reader cannot see must not steer
    what they read. Newlines, tabs and the zero-width space this module adds itself stay."""
    return "".join(
        ch
        for ch in text
        if ch in "\n\t" or ch == _ZWSP or unicodedata.category(ch) not in ("Cc", "Cf")
    )


def safe_url(url: str | None) -> str | None:
    """`url` if it is a plain http(s) link without spaces, angle brackets or a user-info part
    (`https://bank.example@evil.example` shows one host and opens another), else None."""
    if not url or not url.lower().startswith(SAFE_SCHEMES):
        return None
    if any(ch.isspace() or ch in "<>\"'`" for ch in url):
        return None
    host_part = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in host_part:
        return None
    return url


class SafeStream:
    """Sanitises streamed text: `feed(delta)` returns what is safe to show now; `finish()` the rest.

    Text is released up to the last whitespace before any unclosed tag, and only when the safe
    form of what is released extends what was already shown, so the concatenation of everything
    returned equals `safe_text` of the whole text.
    """

    def __init__(self) -> None:
        self._raw = ""
        self._shown = ""

    def feed(self, delta: str) -> str:
        self._raw += delta
        cut = max(self._raw.rfind(" "), self._raw.rfind("\n"))
        # Inside an unclosed tag: step back to the whitespace before it, and again while that
        # is inside a tag too. Cutting right before the `<` could end on text the tag's later
        # removal changes (`<` + `<a>/` becomes `</`, shown as `‹/`; `@everyone` + `<b>x`
        # stops being a mention).
        while cut >= 0 and (opened := self._raw.rfind("<", 0, cut + 1)) > self._raw.rfind(
            ">", 0, cut + 1
        ):
            cut = max(self._raw.rfind(" ", 0, opened), self._raw.rfind("\n", 0, opened))
        if cut < 0:
            return ""
        return self._release(safe_text(self._raw[: cut + 1]))

    def finish(self) -> str:
        """The rest of the text; after this, the shown text is `safe_text` of everything fed."""
        full = safe_text(self._raw)
        if not full.startswith(self._shown):  # cannot happen for the rules above; stay correct
            self._shown = full
            return ""
        return self._release(full)

    @property
    def text(self) -> str:
        return safe_text(self._raw)

    def _release(self, safe: str) -> str:
        if not safe.startswith(self._shown):
            return ""
        out = safe[len(self._shown) :]
        self._shown = safe
        return out
