"""Retry and circuit breaker as pure logic, on a clock that only moves when they sleep."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from faults import FakeClock

from sinks.retry import CircuitBreaker, CircuitState, Retrier, RetryPolicy

OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED


class Down(Exception):
    """The transient failure of these tests."""


def steps(*failures: Exception) -> Callable[[], str]:
    """Work that raises each of `failures` in turn, then returns "done"."""
    left = list(failures)

    def work() -> str:
        if left:
            raise left.pop(0)
        return "done"

    return work


def failing(times: int) -> Callable[[], str]:
    return steps(*(Down() for _ in range(times)))


DEFAULTS = RetryPolicy()


def retrier(
    clock: FakeClock, policy: RetryPolicy = DEFAULTS
) -> tuple[Retrier, list[CircuitState], list[tuple[str, bool]]]:
    states: list[CircuitState] = []
    failures: list[tuple[str, bool]] = []
    retry = Retrier(
        policy,
        lambda exc: isinstance(exc, Down),
        on_failure=lambda exc, transient: failures.append((type(exc).__name__, transient)),
        on_state=states.append,
        clock=clock,
    )
    return retry, states, failures


def test_transient_failures_are_retried_with_jittered_exponential_pauses() -> None:
    clock = FakeClock()
    retry, states, failures = retrier(clock, RetryPolicy(initial_seconds=0.5, max_seconds=3.0))
    assert retry.run(failing(4)) == "done"
    assert failures == [("Down", True)] * 4
    assert states == [], "four failures stay below the breaker's threshold of five"
    windows = [0.5, 1.0, 2.0, 3.0]
    assert len(clock.pauses) == 4
    assert all(0 <= pause <= window for pause, window in zip(clock.pauses, windows, strict=True))


def test_pauses_never_exceed_the_maximum_however_long_the_outage() -> None:
    clock = FakeClock()
    policy = RetryPolicy(initial_seconds=0.1, max_seconds=2.0, breaker_failures=1_000)
    retry, _, _ = retrier(clock, policy)
    assert retry.run(failing(200)) == "done"
    assert len(clock.pauses) == 200
    assert max(clock.pauses) <= 2.0


def test_a_permanent_failure_is_raised_at_once_without_a_pause() -> None:
    clock = FakeClock()
    retry, states, failures = retrier(clock)
    with pytest.raises(ValueError, match="bad sql"):
        retry.run(steps(ValueError("bad sql")))
    assert failures == [("ValueError", False)]
    assert clock.pauses == [] and states == []


def test_the_breaker_opens_after_consecutive_failures_waits_then_probes_and_closes() -> None:
    clock = FakeClock()
    policy = RetryPolicy(breaker_failures=3, breaker_reset_seconds=60.0, max_seconds=1.0)
    retry, states, _ = retrier(clock, policy)
    assert retry.run(failing(3)) == "done"
    assert states == [OPEN, HALF_OPEN, CLOSED]
    assert all(pause <= 1.0 for pause in clock.pauses[:2])
    assert clock.pauses[2] == pytest.approx(60.0), "the third failure opened it: wait the reset"
    assert retry.breaker.state is CLOSED


def test_a_failed_probe_opens_the_circuit_for_another_period() -> None:
    clock = FakeClock()
    policy = RetryPolicy(breaker_failures=2, breaker_reset_seconds=10.0, max_seconds=1.0)
    retry, states, _ = retrier(clock, policy)
    assert retry.run(failing(4)) == "done"
    assert states == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]
    assert [round(p) for p in clock.pauses[1:]] == [10, 10, 10]


def test_failures_count_across_runs_until_a_success() -> None:
    """A database that failed the last batch is still counted against on the next one."""
    clock = FakeClock()
    retry, states, _ = retrier(clock, RetryPolicy(breaker_failures=3))
    with pytest.raises(ValueError):
        retry.run(steps(Down(), Down(), ValueError("then permanent")))
    assert states == []
    assert retry.run(failing(1)) == "done"
    assert states == [OPEN, HALF_OPEN, CLOSED], "the third failure in a row, in the next run"
    assert retry.run(failing(2)) == "done"
    assert states == [OPEN, HALF_OPEN, CLOSED], "the success in between reset the count"


def test_an_open_breaker_asks_for_the_rest_of_its_reset_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 5.0, clock, lambda state: None)
    for _ in range(3):
        assert breaker.seconds_to_wait() == 0.0
        breaker.failed()
    assert breaker.state is OPEN
    assert breaker.seconds_to_wait() == pytest.approx(5.0)
    clock.sleep(2.0)
    assert breaker.seconds_to_wait() == pytest.approx(3.0)
    clock.sleep(3.0)
    assert breaker.seconds_to_wait() == 0.0


@pytest.mark.parametrize(("failures", "reset"), [(0, 1.0), (1, -1.0)])
def test_a_breaker_that_could_never_close_or_open_is_refused(failures: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures, reset, FakeClock(), lambda state: None)
