"""Bounded exponential back-off, with and without jitter.

:func:`exponential` is the one formula (``min(cap, base * 2**attempt)``) shared by retries and by
the circuit breaker's ejection periods; :func:`delays` adds jitter for retry loops. Pure: no
sleeping here, the caller waits (and can inject the random source for reproducible tests).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

#: Beyond this many doublings every sensible ``base`` has passed every sensible ``cap``; it also
#: keeps ``2**attempt`` from overflowing a float.
_MAX_DOUBLINGS = 64


def exponential(attempt: int, base: float, cap: float) -> float:
    """The un-jittered delay before retry number ``attempt`` (0-based): ``min(cap, base * 2**n)``.

    Raises ``ValueError`` for a negative attempt, a non-positive base or a cap below base.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0 (got {attempt})")
    if base <= 0:
        raise ValueError(f"base must be > 0 seconds (got {base})")
    if cap < base:
        raise ValueError(f"cap must be >= base (got cap={cap}, base={base})")
    if attempt >= _MAX_DOUBLINGS:
        return cap
    return min(cap, base * 2.0**attempt)


def delays(
    attempts: int,
    base: float = 0.1,
    cap: float = 5.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield ``attempts`` delays in seconds for successive retries, with "equal jitter".

    Delay ``n`` is drawn uniformly from ``[d/2, d]`` where ``d = exponential(n, base, cap)``: it
    grows exponentially, never exceeds ``cap``, never drops below half the nominal value, and
    retries of many clients spread out instead of arriving in lock-step. ``rng`` defaults to a
    fresh :class:`random.Random`; pass a seeded one for reproducible sequences.
    """
    if attempts < 0:
        raise ValueError(f"attempts must be >= 0 (got {attempts})")
    exponential(0, base, cap)  # validate base and cap even when attempts == 0
    draw = rng if rng is not None else random.Random()
    for attempt in range(attempts):
        nominal = exponential(attempt, base, cap)
        yield nominal / 2 + draw.uniform(0.0, nominal / 2)
