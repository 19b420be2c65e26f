from __future__ import annotations

import pytest

from inference.breaker import CircuitBreaker
from inference.errors import CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_failures_and_refuses_calls() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, reset_after=10, clock=clock)
    for _ in range(2):
        b.before_call()
        b.record_failure()
    assert b.state == "closed"
    b.before_call()
    b.record_failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before_call()


def test_breaker_lets_one_trial_through_after_cool_down_and_closes_on_success() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_after=10, clock=clock)
    b.record_failure()
    clock.now = 10.5
    assert b.state == "half_open"
    b.before_call()
    with pytest.raises(CircuitOpen):  # a second caller waits for the trial's verdict
        b.before_call()
    b.record_success()
    assert b.state == "closed"
    b.before_call()


def test_failed_trial_opens_the_breaker_again() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=2, reset_after=5, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.now = 6
    b.before_call()
    b.record_failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before_call()


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=2, reset_after=5, clock=Clock())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"
