"""The request id: what a caller may send, and how it reaches log records and worker threads."""

from __future__ import annotations

import asyncio
import logging

import pytest

from inference.request_id import accept, bind, current, install_log_records, valid


@pytest.mark.parametrize(
    "given",
    ["abc", "trace-1.2:3_x", "A" * 64, "0123456789abcdef"],
)
def test_short_ids_of_safe_characters_are_kept_as_given(given: str) -> None:
    assert valid(given) and accept(given) == given


@pytest.mark.parametrize(
    "given",
    [None, "", "A" * 65, "has space", "new\nline", 'quote"d', "-leading-dash", "ünïcode", "a/b"],
)
def test_anything_else_is_replaced_by_a_fresh_id(given: str | None) -> None:
    fresh = accept(given)
    assert fresh != given and valid(fresh) and len(fresh) == 16


async def test_the_id_reaches_log_records_made_in_worker_threads_and_new_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_records()
    caplog.set_level(logging.INFO)
    log = logging.getLogger("tests.request_id")
    with bind("turn-42"):
        await asyncio.to_thread(log.info, "in a thread")
        await asyncio.create_task(asyncio.to_thread(log.info, "in a task's thread"))
    log.info("after the turn")
    ids = [getattr(r, "request_id", None) for r in caplog.records if r.name == log.name]
    assert ids == ["turn-42", "turn-42", None]
    assert current() is None
