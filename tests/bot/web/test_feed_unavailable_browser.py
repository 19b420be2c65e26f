"""The widget in Chromium while the post store is out of reach: the answer shows the server's
notice above it, as plain text. Skipped like the other browser tests without Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from bot.chat import FEED_UNAVAILABLE
from tests.bot.web.conftest import CHROMIUM
from tests.bot.web.test_feed_unavailable import Unreachable, unreachable  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"
    ),
]
pytest.importorskip("playwright.sync_api", reason="needs `pip install playwright`")

from tests.bot.web.test_widget_browser import (  # noqa: E402
    HostPages,
    ask,
    browser,  # noqa: F401
    host_pages,  # noqa: F401
    open_widget,
    page,  # noqa: F401
    shot,
    wait_answered,
)


def test_widget_shows_the_feed_unreachable_notice_as_text_above_the_answer(
    page: Any,  # noqa: F811
    unreachable: Unreachable,  # noqa: F811
    host_pages: HostPages,  # noqa: F811
) -> None:
    open_widget(page, host_pages.add("/no-feed", unreachable.server.url))
    ask(page, "What are people saying about the rocket launch?")
    answer = wait_answered(page, 1)
    notice = answer.locator(".notice")
    assert notice.inner_text() == FEED_UNAVAILABLE
    assert notice.get_attribute("role") == "note"
    assert notice.evaluate("el => el.children.length") == 0  # text only, no markup
    assert answer.locator(".bubble").inner_text().strip()
    assert answer.locator(".card").count() == 0
    shot(page, "no-feed-notice")
    assert page.errors == []
