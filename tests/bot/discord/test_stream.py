"""Streaming by edits: rate-limited, split past 2,000 characters, buttons on the last part."""

from __future__ import annotations

from typing import Any

from bot.discord.stream import Streamer


class RecordingSink:
    """Parts as a list of strings, each put recorded (this is the `Sink` protocol itself)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.views: list[Any] = []
        self.puts: list[int] = []
        self.dropped: list[int] = []

    async def put(self, index: int, content: str, view: Any) -> int:
        assert len(content) <= 2000
        self.puts.append(index)
        if index == len(self.parts):
            self.parts.append(content)
            self.views.append(view)
        else:
            self.parts[index], self.views[index] = content, view
        return 1000 + index

    async def drop(self, index: int) -> None:
        self.dropped.append(index)


async def test_edits_are_spaced_by_the_interval_and_the_end_always_shows():
    now = [0.0]
    sink = RecordingSink()
    streamer = Streamer(sink, interval=1.2, clock=lambda: now[0])
    text = ""
    for i in range(50):  # 50 deltas over 5 seconds
        text += f"word{i} "
        now[0] = i * 0.1
        await streamer.update(text)
    assert len(sink.puts) == 5  # at 0.0, 1.2, 2.4, 3.6, 4.8 s: within Discord's 5 per 5 s
    assert sink.parts[0].endswith("▌")
    ids = await streamer.finish(text.strip(), view="buttons")
    assert ids == [1000]
    assert sink.parts == [text.strip()] and sink.views == ["buttons"]


async def test_a_growing_reply_moves_to_a_new_message_and_buttons_go_last():
    sink = RecordingSink()
    streamer = Streamer(sink, interval=0)
    text = ""
    for i in range(40):
        text += f"paragraph {i} " + "x" * 100 + "\n\n"
        await streamer.update(text)
    ids = await streamer.finish(text, view="buttons")
    assert len(ids) == len(sink.parts) == 3
    assert sink.views == [None, None, "buttons"]
    assert not any(p.endswith("▌") for p in sink.parts)


async def test_a_shorter_new_version_drops_the_parts_it_no_longer_needs():
    sink = RecordingSink()
    sink.parts, sink.views = ["old one", "old two", "old three"], [None, None, "buttons"]
    streamer = Streamer(sink, interval=0, shown_parts=3)
    ids = await streamer.finish("short", view="buttons")
    assert ids == [1000]
    assert sink.dropped == [1, 2]
    assert sink.parts[0] == "short" and sink.views[0] == "buttons"
