from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.citations import link_citations, markers
from bot.models import Source
from bot.output import SafeStream, safe_text, safe_url
from retrieval.post import Post


def test_mass_and_id_mentions_are_neutralised():
    out = safe_text("hey @everyone and @here, ping <@123> <@&456> <#789>")
    assert "@everyone" not in out and "@here" not in out
    assert "<@" not in out and "<#" not in out
    assert "everyone" in out and "123" in out  # still readable


def test_html_and_unsafe_links_are_removed():
    out = safe_text("a <img src=x onerror=alert(1)> b <!-- c --> [x](javascript:alert(1)) d <b")
    assert "<img" not in out and "<!--" not in out and "javascript:" not in out
    assert "<b" not in out
    assert out.startswith("a ") and "d" in out
    assert safe_text("1 < 2 and 3 > 2") == "1 < 2 and 3 > 2"


def test_safe_url_keeps_only_plain_http_links():
    assert safe_url("https://bsky.app/x") == "https://bsky.app/x"
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("https://a.b/<script>") is None


@given(st.text(alphabet="ab <>/@everyonejavascript:[]()\n", max_size=80), st.data())
def test_streamed_text_equals_sanitised_whole(text: str, data: st.DataObject):
    assert_streamed_in_pieces_equals_whole(text, data)


def assert_streamed_in_pieces_equals_whole(text: str, data: st.DataObject) -> None:
    """`text` cut at random points and streamed shows exactly `safe_text(text)`."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    stream = SafeStream()
    shown = "".join(stream.feed(p) for p in parts) + stream.finish()
    assert shown == safe_text(text)
    assert safe_text(shown) == shown


def _source(n: int, url: str | None) -> Source:
    post = Post(id=f"p{n}", text="t", created_at="2024-05-01T00:00:00Z", url=url)  # type: ignore[arg-type]
    return Source(number=n, post=post)


def test_citations_link_known_numbers_and_drop_the_rest():
    sources = [_source(1, "https://bsky.app/1"), _source(2, "javascript:alert(1)")]
    text, cited = link_citations("A [1]. B [2]. C [3]. D [2, 1]. E [see](https://x.y).", sources)
    assert (
        text
        == "A [1](https://bsky.app/1). B [2]. C. D [2][1](https://bsky.app/1). E [see](https://x.y)."
    )
    assert [s.number for s in cited] == [1, 2]
    assert markers("x [1] y [2,3]") == [1, 2, 3]


def test_hidden_characters_and_userinfo_links_do_not_get_through() -> None:
    from bot.output import safe_text, safe_url

    shown = safe_text("red \x1b[31malert\x1b[0m \u202eevil\u202c tag\U000e0041 ok")
    assert shown == "red [31malert[0m evil tag ok"
    assert safe_url("https://bsky.app@evil.example/x") is None
    assert safe_url("https://bsky.app/profile/a?next=x@y") == "https://bsky.app/profile/a?next=x@y"


def test_link_text_naming_another_host_is_unlinked() -> None:
    out = safe_text("pay here [https://bank.example](https://evil.example/login) now")
    assert "](" not in out
    assert "https://bank.example" in out and "https://evil.example/login" in out
    assert "](" not in safe_text("[bank.example](https://evil.example)")
    # Honest links stay links: citations, plain words, the same host or a subdomain of it.
    for honest in (
        "[1](https://bsky.app/profile/a/post/1)",
        "[the thread](https://bsky.app/x)",
        "[bsky.app](https://bsky.app/x)",
        "[example.com](https://www.example.com/a)",
    ):
        assert safe_text(honest) == honest


@given(st.text(alphabet="[]() htps:/.abx\n", max_size=60), st.data())
def test_streamed_links_equal_sanitised_whole(text: str, data: st.DataObject) -> None:
    assert_streamed_in_pieces_equals_whole(text, data)


def test_a_stream_never_shows_text_a_later_tag_removal_changes() -> None:
    # Found by the property test above: removing `<a >` makes the first `<` open `</`.
    for pieces in (["<<a >/"], ["<a >< "], ["@everyone<b>x", " y"]):
        stream = SafeStream()
        shown = "".join(stream.feed(p) for p in pieces) + stream.finish()
        assert shown == safe_text("".join(pieces))
