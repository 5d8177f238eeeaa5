"""Retrying database work: backoff with jitter per failure, a circuit breaker across them.

Pure logic over an injected clock, so tests run hours of waiting in
microseconds. Nothing here gives up: a sink that dropped a batch it could not
write would lose it, so the caller waits for as long as the database is away
and only an error that retrying cannot fix is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeVar

from tenacity import Retrying, retry_if_exception, wait_random_exponential

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class CircuitState(IntEnum):
    """The value of the circuit-state gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Stops hammering a database that keeps failing, then lets one probe through.

    After `failures` consecutive failed attempts the circuit opens: the next
    attempt waits until `reset_seconds` have passed, and runs half-open. Its
    success closes the circuit; its failure opens it for another period.
    """

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Clock,
        on_change: Callable[[CircuitState], None],
    ) -> None:
        if failures < 1 or reset_seconds < 0:
            raise ValueError(f"failures ({failures}) must be > 0, reset_seconds >= 0")
        self._threshold = failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at = 0.0
        self.state = CircuitState.CLOSED

    def seconds_to_wait(self) -> float:
        """How long the next attempt must wait; zero unless the circuit is open."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._reset_seconds - self._clock.monotonic())

    def before_attempt(self) -> None:
        """The caller has waited `seconds_to_wait()`, so an open circuit lets this one probe."""
        if self.state is CircuitState.OPEN:
            self._change(CircuitState.HALF_OPEN)

    def succeeded(self) -> None:
        self._failures = 0
        if self.state is not CircuitState.CLOSED:
            self._change(CircuitState.CLOSED)

    def failed(self) -> None:
        self._failures += 1
        if self.state is CircuitState.HALF_OPEN or (
            self.state is CircuitState.CLOSED and self._failures >= self._threshold
        ):
            self._opened_at = self._clock.monotonic()
            self._change(CircuitState.OPEN)

    def _change(self, state: CircuitState) -> None:
        self.state = state
        self._on_change(state)


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults are those of the `ENRICH_SINK_*` settings."""

    initial_seconds: float = 0.1
    """Widest first pause; each further failure doubles the window a pause is drawn from."""
    max_seconds: float = 30.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 30.0


class Retrier:
    """Runs idempotent work until it succeeds or fails permanently.

    Between transient failures it pauses for a random time in a window that
    doubles per failure up to `max_seconds` ("full jitter", so partitions
    that failed together do not retry together), and at least as long as
    the circuit breaker asks. The breaker outlives one `run`, so a database
    that failed the last batch is still treated with caution on the next.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        is_transient: Callable[[BaseException], bool],
        *,
        on_failure: Callable[[BaseException, bool], None],
        on_state: Callable[[CircuitState], None],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.breaker = CircuitBreaker(
            policy.breaker_failures, policy.breaker_reset_seconds, clock, on_state
        )
        self._backoff = wait_random_exponential(
            multiplier=policy.initial_seconds, max=policy.max_seconds
        )
        self._is_transient = is_transient
        self._on_failure = on_failure
        self._clock = clock

    def run(self, work: Callable[[], T]) -> T:
        """`work()`'s result; a permanent failure is raised as it is, after no retry."""
        retrying = Retrying(
            sleep=self._clock.sleep,
            wait=lambda state: max(self._backoff(state), self.breaker.seconds_to_wait()),
            retry=retry_if_exception(self._is_transient),
            reraise=True,
        )
        return retrying(self._attempt, work)

    def _attempt(self, work: Callable[[], T]) -> T:
        self.breaker.before_attempt()
        try:
            result = work()
        except Exception as exc:
            transient = self._is_transient(exc)
            self._on_failure(exc, transient)
            if transient:
                self.breaker.failed()
            raise
        self.breaker.succeeded()
        return result
