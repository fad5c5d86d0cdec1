"""Per-endpoint circuit breaker: eject endpoints that fail, try them again later.

States of one endpoint name:

* **closed** (the default for every name never seen): available. Each :meth:`record_failure`
  counts a consecutive failure; reaching ``threshold`` (default 1: one failed request) ejects it.
* **open** (ejected) until ``now + exponential(n - 1, base, cap)`` for the ``n``-th consecutive
  ejection: 1 s, 2 s, 4 s ... at most 30 s by default. Not available. Failures reported while open
  (requests that started before the ejection) do not extend the period.
* **half-open** once that time has passed: available for exactly one trial. The selection policy
  calls :meth:`record_attempt` when it hands the endpoint out, which takes the trial; until the
  trial's outcome is recorded the endpoint is unavailable again (if no outcome arrives within
  ``trial_timeout`` another trial is allowed, so a lost caller cannot strand an endpoint). A failed
  trial ejects again with the next, doubled period, whatever the threshold.

:meth:`record_success` closes the breaker from any state and resets the back-off. State is kept
only for names with failures, so the breaker does not grow with the number of healthy endpoints;
:meth:`forget` drops a name (e.g. when the endpoint is unregistered).

Pure logic: the clock is injected (``time.monotonic`` by default) and nothing sleeps. Not
thread-safe; use it from one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from sdk.metrics import EJECTIONS
from sdk.select.backoff import exponential


class BreakerState(Enum):
    """Where one endpoint stands, see the module docstring."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class _Entry:
    failures: int = 0  # consecutive failures while closed
    ejections: int = 0  # consecutive ejections, drives the back-off
    until: float | None = None  # ejected until this clock time; None while closed
    trial_since: float | None = None  # clock time a half-open trial was handed out


class CircuitBreaker:
    """Circuit breaker keyed by endpoint name (see the module docstring for the state machine)."""

    def __init__(
        self,
        threshold: int = 1,
        base: float = 1.0,
        cap: float = 30.0,
        trial_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1 failure (got {threshold})")
        if trial_timeout <= 0:
            raise ValueError(f"trial_timeout must be > 0 seconds (got {trial_timeout})")
        exponential(0, base, cap)  # validates base and cap
        self._threshold = threshold
        self._base = base
        self._cap = cap
        self._trial_timeout = trial_timeout
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def state(self, name: str) -> BreakerState:
        """The current state of ``name``."""
        entry = self._entries.get(name)
        if entry is None or entry.until is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if self._clock() < entry.until else BreakerState.HALF_OPEN

    def is_available(self, name: str) -> bool:
        """True if ``name`` may be picked now: closed, or half-open with its trial not taken."""
        state = self.state(name)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        trial_since = self._entries[name].trial_since
        return trial_since is None or self._clock() - trial_since >= self._trial_timeout

    def record_attempt(self, name: str) -> None:
        """Note that ``name`` was handed out; in half-open state this takes the single trial."""
        if self.state(name) is BreakerState.HALF_OPEN:
            self._entries[name].trial_since = self._clock()

    def record_success(self, name: str) -> None:
        """A request to ``name`` succeeded: close the breaker and reset its back-off."""
        self._entries.pop(name, None)

    def record_failure(self, name: str) -> None:
        """A request to ``name`` failed: count it, and eject the endpoint when due."""
        state = self.state(name)
        if state is BreakerState.OPEN:
            return
        entry = self._entries.setdefault(name, _Entry())
        if state is BreakerState.CLOSED:
            entry.failures += 1
            if entry.failures < self._threshold:
                return
        entry.failures = 0
        entry.ejections += 1
        EJECTIONS.inc()
        entry.trial_since = None
        entry.until = self._clock() + exponential(entry.ejections - 1, self._base, self._cap)

    def forget(self, name: str) -> None:
        """Drop everything known about ``name``."""
        self._entries.pop(name, None)

    def ejected(self) -> dict[str, float]:
        """Names currently ejected (open), each with the clock time its ejection ends."""
        now = self._clock()
        return {
            name: entry.until
            for name, entry in self._entries.items()
            if entry.until is not None and now < entry.until
        }
