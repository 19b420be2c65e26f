"""Session tokens, API keys, token buckets and replayable turns, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.web.limits import RateLimiter
from bot.web.runs import Run, Runs, TooManyRuns
from bot.web.sessions import ApiKeys, BadToken, SessionSigner


def test_a_session_token_verifies_until_it_expires() -> None:
    signer = SessionSigner("s" * 20, ttl_s=60)
    token, who, exp = signer.issue(now=1_000)
    assert signer.verify(token, now=1_030) == who
    assert exp == 1_060
    with pytest.raises(BadToken, match="expired"):
        signer.verify(token, now=1_061)


def test_a_token_signed_with_another_secret_or_tampered_is_refused() -> None:
    token, _, _ = SessionSigner("a" * 20).issue()
    with pytest.raises(BadToken):
        SessionSigner("b" * 20).verify(token)
    body, _, sig = token.partition(".")
    with pytest.raises(BadToken):
        SessionSigner("a" * 20).verify(body + "x." + sig)
    for junk in ("", ".", "abc", "a.b.c", "\x00.\x00"):
        with pytest.raises(BadToken):
            SessionSigner("a" * 20).verify(junk)


def test_two_sessions_are_two_owners() -> None:
    signer = SessionSigner("s" * 20)
    assert signer.issue()[1].owner != signer.issue()[1].owner


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16"):
        SessionSigner("short")


def test_api_keys_name_their_owner() -> None:
    keys = ApiKeys({"backend": "k" * 24, "empty": ""})
    who = keys.identify("k" * 24)
    assert who is not None and who.owner == "key:backend" and who.kind == "key"
    assert keys.identify("") is None and keys.identify("k" * 23) is None


def test_a_bucket_allows_its_burst_then_refills_with_time() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.allow("a", now=0) == 0 and limiter.allow("a", now=0) == 0
    wait = limiter.allow("a", now=0)
    assert wait == pytest.approx(1.0)
    assert limiter.allow("b", now=0) == 0  # another key has its own bucket
    assert limiter.allow("a", now=1.01) == 0


async def _events(run: Run, n: int, gate: asyncio.Event) -> AsyncIterator[tuple[str, str]]:
    for i in range(n):
        if i == 2:
            await gate.wait()
        yield "token", str(i)


async def test_a_run_replays_after_any_event_and_follows_live() -> None:
    runs = Runs(per_owner=1)
    gate = asyncio.Event()
    run = runs.start("me", "c1", lambda r: _events(r, 4, gate))
    with pytest.raises(TooManyRuns):
        runs.start("me", "c2", lambda r: _events(r, 1, gate))
    seen = []
    async for event in run.follow(-1):
        seen.append(event.data)
        if len(seen) == 2:
            break
    gate.set()
    rest = [e.data async for e in run.follow(1) if e.name != "end"]
    assert seen + rest == ["0", "1", "2", "3"]
    assert runs.get("someone else", run.id) is None
    assert runs.active() == 0


async def test_stopping_a_run_cancels_its_producer() -> None:
    runs = Runs()
    gate = asyncio.Event()  # never set: the producer waits forever unless cancelled
    run = runs.start("me", "c1", lambda r: _events(r, 5, gate))
    await asyncio.sleep(0.01)
    await runs.stop(run)
    assert run.finished and [e.data for e in run.events if e.name == "token"] == ["0", "1"]
