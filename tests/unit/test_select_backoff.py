"""sdk.select.backoff: bounded exponential back-off with jitter."""

from __future__ import annotations

import random

import pytest

from sdk.select import delays, exponential


def test_exponential_doubles_up_to_the_cap() -> None:
    assert [exponential(n, 1.0, 30.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert exponential(10_000, 1.0, 30.0) == 30.0  # no overflow


@pytest.mark.parametrize(("attempt", "base", "cap"), [(-1, 1.0, 2.0), (0, 0.0, 2.0), (0, 2.0, 1.0)])
def test_exponential_rejects_bad_arguments(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        exponential(attempt, base, cap)


def test_delays_are_jittered_within_half_to_full_nominal_and_bounded() -> None:
    out = list(delays(12, base=0.1, cap=2.0, rng=random.Random(7)))
    assert len(out) == 12
    for n, delay in enumerate(out):
        nominal = exponential(n, 0.1, 2.0)
        assert nominal / 2 <= delay <= nominal <= 2.0
    assert len(set(out)) == 12  # jittered, not lock-step


def test_delays_reproducible_with_injected_rng_and_empty_for_zero() -> None:
    assert list(delays(5, rng=random.Random(1))) == list(delays(5, rng=random.Random(1)))
    assert list(delays(0)) == []
    with pytest.raises(ValueError):
        list(delays(-1))
    with pytest.raises(ValueError):
        list(delays(0, base=1.0, cap=0.5))
