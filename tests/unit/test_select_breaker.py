"""sdk.select.breaker: ejection, exponential back-off, half-open trial, with a fake clock."""

from __future__ import annotations

import pytest

from sdk.select import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_unknown_names_are_closed_and_available(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    assert breaker.is_available("a")
    assert breaker.state("a") is BreakerState.CLOSED
    assert breaker.ejected() == {}


def test_one_failure_ejects_for_one_second_then_half_open(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure("a")
    assert not breaker.is_available("a")
    assert breaker.ejected() == {"a": 1001.0}
    clock.now = 1000.999
    assert breaker.state("a") is BreakerState.OPEN
    clock.now = 1001.0
    assert breaker.state("a") is BreakerState.HALF_OPEN
    assert breaker.is_available("a")
    assert breaker.ejected() == {}


def test_half_open_allows_exactly_one_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock, trial_timeout=5.0)
    breaker.record_failure("a")
    clock.now += 1
    breaker.record_attempt("a")
    assert not breaker.is_available("a")  # the trial is running
    clock.now += 5  # the trial's caller never reported: another trial is allowed
    assert breaker.is_available("a")


def test_success_closes_and_resets_backoff(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure("a")
    clock.now += 1
    breaker.record_attempt("a")
    breaker.record_success("a")
    assert breaker.state("a") is BreakerState.CLOSED
    breaker.record_failure("a")
    assert breaker.ejected() == {"a": clock.now + 1}  # back to the base period


def test_failed_trials_double_the_period_up_to_the_cap(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    periods = []
    breaker.record_failure("a")
    for _ in range(7):
        until = breaker.ejected()["a"]
        periods.append(until - clock.now)
        clock.now = until
        breaker.record_attempt("a")
        breaker.record_failure("a")
    assert periods == [1, 2, 4, 8, 16, 30, 30]


def test_threshold_counts_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(threshold=3, clock=clock)
    breaker.record_failure("a")
    breaker.record_failure("a")
    breaker.record_success("a")
    breaker.record_failure("a")
    breaker.record_failure("a")
    assert breaker.is_available("a")
    breaker.record_failure("a")
    assert not breaker.is_available("a")
    clock.now += 1
    breaker.record_failure("a")  # a failed half-open trial re-ejects at once
    assert breaker.ejected() == {"a": clock.now + 2}


def test_failures_while_open_do_not_extend(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.record_failure("a")
    clock.now += 0.5
    breaker.record_failure("a")
    assert breaker.ejected() == {"a": 1001.0}


def test_forget_and_custom_base_cap(clock: FakeClock) -> None:
    breaker = CircuitBreaker(base=0.5, cap=1.0, clock=clock)
    breaker.record_failure("a")
    breaker.record_failure("b")
    assert breaker.ejected() == {"a": 1000.5, "b": 1000.5}
    breaker.forget("a")
    assert breaker.is_available("a")


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0}, {"base": 0.0}, {"cap": 0.1}, {"trial_timeout": 0.0}],
)
def test_rejects_bad_configuration(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
