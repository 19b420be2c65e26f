"""Near-duplicate fingerprints: reposts and copy-paste spam collapse onto one indexed post."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@[\w.\-]+(@[\w.\-]+)?")
_RETWEET = re.compile(r"^\s*rt\b[:\s]*", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)

# Shorter texts ("good morning", "lol") are said independently by many people: not spam.
MIN_CHARS = 24


def fingerprint(text: str) -> str | None:
    """A key equal for texts that differ only in case, punctuation, links, mentions and an
    "RT" prefix; None for texts too short to call a duplicate."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _RETWEET.sub("", _MENTION.sub(" ", _URL.sub(" ", folded)))
    words = _NON_WORD.sub(" ", folded).split()
    core = " ".join(words)
    if len(core) < MIN_CHARS:
        return None
    return hashlib.blake2b(core.encode(), digest_size=12).hexdigest()
