"""Splitting and escaping: what Discord will show."""

from __future__ import annotations

from bot.discord.render import no_previews, quote_user_text, split_message


def test_long_text_splits_at_paragraphs_under_the_limit_and_loses_nothing():
    paragraphs = [f"Paragraph {i}: " + "word " * 60 for i in range(30)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    parts = split_message(text)
    assert len(parts) > 1 and all(len(p) <= 2000 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    assert all(p.startswith("Paragraph") for p in parts)  # each part starts a paragraph


def test_a_code_block_cut_across_parts_is_closed_and_reopened_with_its_language():
    code = "\n".join(f"print({i})  # line" for i in range(300))
    parts = split_message(f"Here:\n```python\n{code}\n```\nDone.")
    assert len(parts) > 1 and all(len(p) <= 2000 for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, "every part has balanced fences"
    assert parts[1].startswith("```python\n")


def test_a_markdown_link_is_never_cut_in_half():
    text = ("see [the long label of a link](https://example.org/x) " * 60).strip()
    for part in split_message(text, limit=500):
        assert part.count("[") == part.count("](") and part.count("(https") == part.count(")")


def test_links_get_no_preview_cards_and_user_text_is_inert():
    assert no_previews("a [1](https://bsky.app/p/1)") == "a [1](<https://bsky.app/p/1>)"
    assert no_previews("a [1](<https://bsky.app/p/1>)") == "a [1](<https://bsky.app/p/1>)"
    quoted = quote_user_text("**bold** @everyone\nnext")
    assert "\n" not in quoted and "**" not in quoted.replace("\\*", "")
    assert "@everyone" not in quoted
