"""A circuit breaker: after repeated failures, fail fast for a while instead of piling on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from inference.errors import CircuitOpen

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed: calls pass. `failure_threshold` failures in a row open it: calls raise `CircuitOpen`
    for `reset_after` seconds. Then half-open: one trial call passes; its success closes the
    breaker, its failure opens it again.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after: float = 15.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state: State = "closed"
        self._trial_in_flight = False

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_after:
            return "half_open"
        return self._state

    def before_call(self) -> None:
        """Raise `CircuitOpen` if the call must not be tried now."""
        state = self.state
        if state == "open":
            wait = self.reset_after - (self._clock() - self._opened_at)
            raise CircuitOpen(
                f"model server failed {self._failures} times in a row; retrying in {wait:.1f}s"
            )
        if state == "half_open":
            if self._trial_in_flight:
                raise CircuitOpen("model server is being probed after failures; try again shortly")
            self._state = "half_open"
            self._trial_in_flight = True

    def record_success(self) -> None:
        self._failures = 0
        self._state = "closed"
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_in_flight = False
        if self._state == "half_open" or self._failures >= self.failure_threshold:
            self._state = "open"
            self._opened_at = self._clock()

    def release(self) -> None:
        """The call ended without a verdict (the caller cancelled it): let another trial through."""
        self._trial_in_flight = False
