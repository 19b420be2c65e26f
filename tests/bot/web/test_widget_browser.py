"""The widget in Debian's Chromium, embedded in a plain host page on another origin.

Each state is saved as a screenshot under test-artifacts/web/. Skipped when /usr/bin/chromium
is absent (apt-get install chromium) or playwright is not installed.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bot.web.conftest import (
    ARTIFACTS,
    CHROMIUM,
    DroppingProxy,
    LiveServer,
    free_port,
    record_trending,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs `pip install playwright`")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>A plain host page</title>
<style>/* hostile host styles: the widget's shadow root must not care */
button {{ visibility: hidden !important; }}
* {{ font-family: serif !important; color: red; }}</style>
</head><body><h1>Someone's blog</h1><p>Nothing but text here.</p>
<script src="{api}/widget.js" data-persona="{persona}" data-theme="{theme}"
        data-color="#7b1fa2" async></script>
</body></html>"""


class HostPages:
    """Plain pages on their own origin (another port), embedding the widget from the API."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, api: str, *, persona: str = "quip", theme: str = "light") -> str:
        self.pages[path] = HOST_PAGE.format(api=api, persona=persona, theme=theme)
        return self.url + path


@pytest.fixture(scope="module")
def host_pages() -> Iterator[HostPages]:
    pages = HostPages()
    yield pages
    pages.server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    context.close()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def open_widget(page: Any, url: str) -> None:
    page.goto(url)
    launcher = page.get_by_role("button", name="Open quipfeed chat")
    launcher.wait_for()
    launcher.click()
    page.get_by_role("textbox", name="Message").wait_for()


def ask(page: Any, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def wait_answered(page: Any, count: int, timeout: float = 60_000) -> Any:
    """Wait until `count` stored answers are shown (ids from the server, stream finished)."""
    page.wait_for_function(
        """n => {
            const root = document.querySelector('#quipfeed-widget').shadowRoot;
            const done = root.querySelectorAll('.msg.assistant[data-id]').length >= n;
            return done && !root.querySelector('[data-streaming="true"]');
        }""",
        arg=count,
        timeout=timeout,
    )
    return page.locator(".msg.assistant[data-id]").nth(count - 1)


def test_widget_opens_from_one_tag_and_streams_an_answer(
    page: Any, live: LiveServer, host_pages: HostPages
) -> None:
    url = host_pages.add("/blog", live.url)
    page.goto(url)
    launcher = page.get_by_role("button", name="Open quipfeed chat")
    launcher.wait_for()
    # The host page hides every button and paints text red; the widget's shadow root is immune.
    assert launcher.is_visible()
    assert launcher.get_attribute("aria-expanded") == "false"
    shot(page, "01-closed")
    launcher.click()
    dialog = page.get_by_role("dialog", name="quipfeed chat")
    assert dialog.is_visible()
    shot(page, "02-open-empty")
    ask(page, "What are people saying about the rocket launch?")
    page.locator(".msg.assistant .bubble").first.wait_for()
    shot(page, "03-streaming")
    answer = wait_answered(page, 1)
    assert answer.locator(".bubble").inner_text().strip()
    color = page.evaluate(
        "getComputedStyle(document.querySelector('#quipfeed-widget').shadowRoot"
        ".querySelector('.launcher')).backgroundColor"
    )
    assert color == "rgb(123, 31, 162)"  # data-color, not the host's red
    shot(page, "04-answered")
    metrics = page.evaluate("window.quipfeed.metrics()")
    assert metrics["firstTokenPaintedAt"] >= metrics["firstTokenAt"] > metrics["sendAt"] > 0
    # Keyboard: Escape closes and gives focus back to the launcher.
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    assert (
        page.evaluate(
            "document.querySelector('#quipfeed-widget').shadowRoot.activeElement.className"
        )
        == "launcher"
    )
    assert page.errors == []


def test_regenerate_then_navigate_between_versions(
    page: Any, live: LiveServer, host_pages: HostPages
) -> None:
    open_widget(page, host_pages.add("/regen", live.url))
    ask(page, "What is the feed saying about football?")
    first = wait_answered(page, 1)
    first_text = first.locator(".bubble").inner_text()
    first.get_by_role("button", name="Regenerate").click()
    page.locator(".version").filter(has_text="2/2").wait_for(timeout=60_000)
    wait_answered(page, 1)
    shot(page, "05-regenerated-2-of-2")
    page.get_by_role("button", name="Previous version").click()
    page.locator(".version").filter(has_text="1/2").wait_for()
    assert page.locator(".msg.assistant[data-id] .bubble").inner_text() == first_text
    assert page.get_by_role("button", name="Previous version").is_disabled()
    shot(page, "06-version-1-of-2")
    page.get_by_role("button", name="Next version").click()
    page.locator(".version").filter(has_text="2/2").wait_for()
    assert page.errors == []


def test_edit_an_answer_in_markdown_and_continue_from_it(
    page: Any, live: LiveServer, host_pages: HostPages
) -> None:
    open_widget(page, host_pages.add("/edit", live.url))
    ask(page, "What are people saying about the storm?")
    answer = wait_answered(page, 1)
    answer.get_by_role("button", name="Edit").click()
    editor = page.get_by_role("textbox", name="Edit answer (Markdown)")
    editor.fill("The storm posts say **heavy rain** and [a link](https://example.org).")
    assert "heavy rain" in page.locator(".editor .preview strong").inner_text()
    shot(page, "07-editing-answer")
    page.get_by_role("button", name="Save & continue").click()
    page.locator(".msg.assistant[data-id] strong").filter(has_text="heavy rain").wait_for()
    link = page.locator(".msg.assistant[data-id] a[href='https://example.org']")
    assert link.get_attribute("rel") == "noopener nofollow"
    page.locator(".version").filter(has_text="2/2").wait_for()
    shot(page, "08-edited-answer")
    ask(page, "tell me more")
    wait_answered(page, 2)
    # The question continued from the edited answer, which is still shown above it.
    assert "heavy rain" in page.locator(".msg.assistant[data-id]").nth(0).inner_text()
    # Edit the question: it is asked afresh as a new version.
    page.locator(".msg.user").nth(0).get_by_role("button", name="Edit").click()
    page.get_by_role("textbox", name="Edit question (Markdown)").fill("And the football?")
    page.get_by_role("button", name="Save & ask").click()
    page.locator(".msg.user .bubble").filter(has_text="And the football?").wait_for()
    wait_answered(page, 1)
    assert page.locator(".msg.user").nth(0).locator(".version").inner_text() == "2/2"
    shot(page, "09-edited-question")
    assert page.errors == []


def test_switch_between_conversations(page: Any, live: LiveServer, host_pages: HostPages) -> None:
    open_widget(page, host_pages.add("/convs", live.url))
    ask(page, "What are people saying about the election?")
    wait_answered(page, 1)
    page.get_by_role("button", name="New conversation").click()
    ask(page, "hello")
    wait_answered(page, 1)
    page.get_by_role("button", name="Conversations").click()
    items = page.locator(".drawer .conv .open")
    items.nth(1).wait_for()
    assert items.count() == 2
    shot(page, "10-conversation-list")
    page.get_by_role(
        "button", name="What are people saying about the election?", exact=True
    ).click()
    page.locator(".msg.user .bubble").filter(has_text="election").wait_for()
    assert page.locator(".msg.user").count() == 1
    assert "election" in page.locator("header h2").inner_text()
    shot(page, "11-switched-conversation")
    assert page.errors == []


def test_hostile_posts_and_replies_render_inert(
    page: Any, scripted_live: LiveServer, host_pages: HostPages
) -> None:
    open_widget(page, host_pages.add("/xss", scripted_live.url))
    ask(page, "What does the hostile post about the rocket launch say?")
    answer = wait_answered(page, 1)
    page.wait_for_timeout(300)  # give any injected handler a chance to fire
    shot(page, "12-xss-inert")
    assert page.evaluate("window.__pwned") is None
    root = "document.querySelector('#quipfeed-widget').shadowRoot"
    assert (
        page.evaluate(
            f"{root}.querySelectorAll('img, script, iframe, [onerror], [onclick], "
            "[onmouseover]').length"
        )
        == 0
    )
    hrefs = page.evaluate(f"[...{root}.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert not [h for h in hrefs if h and not h.startswith(("http://", "https://"))]
    rels = page.evaluate(f"[...{root}.querySelectorAll('a[href]')].map(a => a.rel)")
    assert all(r == "noopener nofollow" for r in rels)
    # The hostile post is shown as a card, its markup as plain text.
    card = answer.locator(".card").filter(has_text="Hostile post")
    assert "<img src=x onerror" in card.inner_text()
    assert card.locator("a").count() == 0  # its javascript: URL gives no link
    # The renderer itself, fed raw hostile Markdown (no server-side sanitiser in between).
    html = page.evaluate(
        """window.quipfeed.renderMarkdown('<img src=x onerror="window.__pwned=11">'
           + '<script>window.__pwned=12</script>[x](javascript:window.__pwned=13)'
           + '<a href="https://ok.example" onclick="window.__pwned=14">ok</a>')"""
    )
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert "onclick" not in html and 'rel="noopener nofollow"' in html
    page.evaluate(
        f"(html) => {{ const d = document.createElement('div'); d.innerHTML = html; "
        f"{root}.append(d); d.querySelector('a[href]').click(); }}",
        html,
    )
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_reconnects_after_a_network_drop_without_losing_the_partial_answer(
    page: Any, slow_stream: LiveServer, host_pages: HostPages
) -> None:
    proxy = DroppingProxy(slow_stream.port)
    try:
        open_widget(page, host_pages.add("/drop", proxy.url))
        ask(page, "What does the hostile post about the rocket launch say?")
        streaming = page.locator("[data-streaming='true'] .bubble")
        streaming.filter(has_text="Launch").wait_for()
        proxy.drop(pause=1.0)  # the connection dies mid-answer; the network stays down 1 s
        page.get_by_text("Connection lost — reconnecting…").wait_for(timeout=10_000)
        partial = streaming.inner_text()
        assert "Launch" in partial  # the partial answer stays on screen
        shot(page, "13-reconnecting")
        answer = wait_answered(page, 1)
        text = answer.locator(".bubble").inner_text()
        assert text.startswith("Launch news") and text.rstrip().endswith("end.")
        assert text.count("Launch news") == 1  # resumed, not restarted
        shot(page, "14-reconnected")
    finally:
        proxy.close()


def test_suggestions_persona_switcher_trending_stop_and_phone_layout(
    browser: Any,
    scripted_live: LiveServer,
    host_pages: HostPages,
    web_redis_url: str,
    web_posts: list[Any],
) -> None:
    record_trending(web_redis_url, web_posts[10:14], "quipfeedwidgettrend")
    context = browser.new_context(
        viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    try:
        open_widget(page, host_pages.add("/phone", scripted_live.url, theme="dark"))
        width = page.evaluate(
            "document.querySelector('#quipfeed-widget').shadowRoot"
            ".querySelector('.panel').getBoundingClientRect().width"
        )
        assert width == 390  # full width on a phone
        ask(page, "What does the hostile post about the rocket launch say?")
        wait_answered(page, 1)
        chips = page.get_by_role("group", name="Suggested follow-ups").get_by_role("button")
        chips.first.wait_for()
        assert chips.count() == 2
        shot(page, "15-phone-dark-suggestions")
        persona = page.get_by_role("combobox", name="Persona")
        assert set(persona.locator("option").all_inner_texts()) >= {"quip", "plain", "wire"}
        persona.select_option("plain")
        page.get_by_role("button", name="Trending now").click()
        topic = page.get_by_role("button", name="#quipfeedwidgettrend")
        topic.wait_for()
        shot(page, "16-trending-panel")
        page.get_by_role("button", name="Trending now").click()
        # Stop generation: the Send button turns into Stop while a reply streams.
        chips.first.click()
        stop = page.get_by_role("button", name="Stop generating")
        stop.wait_for()
        stop.click()
        page.get_by_text("Stopped.").wait_for()
        shot(page, "17-stopped")
        assert page.get_by_role("button", name="Send").is_visible()
    finally:
        context.close()
