"""Selection policies: pick one endpoint among the candidates of :func:`sdk.select.candidates`.

Every policy has one method, ``pick(service_name, candidates, exclude) -> NetworkServiceEndpoint``
(the :class:`Policy` protocol). The endpoints left to choose from are the candidates whose name is
not in ``exclude`` (e.g. endpoints this request already tried) and that the optional
:class:`~sdk.select.breaker.CircuitBreaker` reports available; the picked endpoint is reported to
the breaker with ``record_attempt`` (which takes a half-open trial). When nothing is left,
:class:`~sdk.errors.NotFound` names the service and says why: no candidate at all (no endpoint
registered for the service, or none matches the client), or all candidates excluded / ejected.

* :class:`RoundRobin` (the default): per service, the candidate after the one picked last time, in
  candidate order, skipping unavailable ones; every available candidate gets its turn.
* :class:`LeastConnections`: the candidate with the lowest ``load(name) / weight``; ties rotate
  round-robin.
* :class:`Weighted`: smooth weighted round robin (nginx's algorithm: deterministic, and a 90/10
  split over 1,000 picks is exactly 900/100, interleaved), or with ``randomized=True`` independent
  weighted random draws from an injectable RNG.

State is per service name, in memory; not thread-safe (use from one event loop).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence, Set
from fractions import Fraction
from typing import Protocol

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import InvalidArgument, NotFound
from sdk.select.breaker import CircuitBreaker
from sdk.select.match import WeightedCandidate


class Policy(Protocol):
    """Picks one endpoint for a service; raises NotFound when none is left."""

    def pick(
        self,
        service_name: str,
        candidates: Sequence[WeightedCandidate],
        exclude: Set[str] = frozenset(),
    ) -> NetworkServiceEndpoint: ...


class _FilteringPolicy(ABC):
    """Shared part: filter by ``exclude`` and breaker, explain NotFound, record the attempt."""

    def __init__(self, *, breaker: CircuitBreaker | None = None) -> None:
        self._breaker = breaker

    def pick(
        self,
        service_name: str,
        candidates: Sequence[WeightedCandidate],
        exclude: Set[str] = frozenset(),
    ) -> NetworkServiceEndpoint:
        """One endpoint among the available candidates (see the module docstring)."""
        breaker = self._breaker
        available = [
            c
            for c in candidates
            if c.name not in exclude and (breaker is None or breaker.is_available(c.name))
        ]
        if not available:
            raise NotFound(_why_none(service_name, candidates, exclude, breaker))
        chosen = self._choose(service_name, candidates, available)
        if breaker is not None:
            breaker.record_attempt(chosen.name)
        return chosen.endpoint

    @abstractmethod
    def _choose(
        self,
        service_name: str,
        candidates: Sequence[WeightedCandidate],
        available: Sequence[WeightedCandidate],
    ) -> WeightedCandidate:
        """One of ``available`` (never empty, in candidate order)."""


def _why_none(
    service_name: str,
    candidates: Sequence[WeightedCandidate],
    exclude: Set[str],
    breaker: CircuitBreaker | None,
) -> str:
    if not candidates:
        return (
            f"network service {service_name!r}: no endpoint is registered for it "
            "(or none matches the client's labels)"
        )
    excluded = sorted(c.name for c in candidates if c.name in exclude)
    ejected = sorted(c.name for c in candidates if c.name not in exclude)
    parts = []
    if excluded:
        parts.append(f"{len(excluded)} excluded (already tried): {', '.join(excluded)}")
    if ejected:
        parts.append(
            f"{len(ejected)} ejected by the circuit breaker (failing, back-off or trial "
            f"running): {', '.join(ejected)}"
        )
    return (
        f"network service {service_name!r}: all {len(candidates)} candidate endpoints are "
        f"unavailable, {'; '.join(parts)}"
    )


class _Rotation:
    """Per service, the next eligible name after the one returned last time, cyclically."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def next(
        self, service_name: str, candidates: Sequence[WeightedCandidate], eligible: Set[str]
    ) -> WeightedCandidate:
        names = [c.name for c in candidates]
        last = self._last.get(service_name)
        start = names.index(last) + 1 if last in names else 0
        for step in range(len(candidates)):
            candidate = candidates[(start + step) % len(candidates)]
            if candidate.name in eligible:
                self._last[service_name] = candidate.name
                return candidate
        raise ValueError("no eligible candidate")  # callers guarantee one; unreachable


class RoundRobin(_FilteringPolicy):
    """Rotate over the available candidates, per service, ignoring weights."""

    def __init__(self, *, breaker: CircuitBreaker | None = None) -> None:
        super().__init__(breaker=breaker)
        self._rotation = _Rotation()

    def _choose(
        self,
        service_name: str,
        candidates: Sequence[WeightedCandidate],
        available: Sequence[WeightedCandidate],
    ) -> WeightedCandidate:
        return self._rotation.next(service_name, candidates, {c.name for c in available})


class LeastConnections(_FilteringPolicy):
    """The available candidate with the lowest ``load(name) / weight``; ties rotate.

    ``load`` returns the endpoint's current number of connections (or any non-negative load).
    """

    def __init__(
        self, load: Callable[[str], int], *, breaker: CircuitBreaker | None = None
    ) -> None:
        super().__init__(breaker=breaker)
        self._load = load
        self._rotation = _Rotation()

    def _choose(
        self,
        service_name: str,
        candidates: Sequence[WeightedCandidate],
        available: Sequence[WeightedCandidate],
    ) -> WeightedCandidate:
        scores = {c.name: Fraction(self._load(c.name), c.weight) for c in available}
        lowest = min(scores.values())
        tied = {name for name, score in scores.items() if score == lowest}
        return self._rotation.next(service_name, candidates, tied)


class Weighted(_FilteringPolicy):
    """Pick in proportion to the candidates' weights.

    Default: smooth weighted round robin (nginx). Per service every candidate has a current
    weight; each pick adds each available candidate's weight to its current weight, picks the
    highest (first in candidate order on a tie) and subtracts the total of the available weights
    from the winner. Deterministic; over any window of ``sum(weights)`` picks with a stable
    candidate set each candidate is picked exactly ``weight`` times, spread out evenly.

    ``randomized=True``: independent draws with probability ``weight / total`` from ``rng``
    (a fresh :class:`random.Random` unless one is injected).
    """

    def __init__(
        self,
        *,
        randomized: bool = False,
        rng: random.Random | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(breaker=breaker)
        self._randomized = randomized
        self._rng = rng if rng is not None else random.Random()
        self._current: dict[str, dict[str, int]] = {}

    def _choose(
        self,
        service_name: str,
        candidates: Sequence[WeightedCandidate],
        available: Sequence[WeightedCandidate],
    ) -> WeightedCandidate:
        if self._randomized:
            return self._rng.choices(available, weights=[c.weight for c in available])[0]
        known = {c.name for c in candidates}
        current = {
            name: value
            for name, value in self._current.get(service_name, {}).items()
            if name in known
        }
        best: WeightedCandidate | None = None
        for candidate in available:
            current[candidate.name] = current.get(candidate.name, 0) + candidate.weight
            if best is None or current[candidate.name] > current[best.name]:
                best = candidate
        assert best is not None  # available is never empty here
        current[best.name] -= sum(c.weight for c in available)
        self._current[service_name] = current
        return best


#: Endpoint selection policies by name.
POLICIES = ("round-robin", "least-connections", "weighted")


def make_policy(name: str, load: Callable[[str], int], breaker: CircuitBreaker) -> Policy:
    """The selection policy called ``name`` (see POLICIES), skipping ejected endpoints."""
    if name == "round-robin":
        return RoundRobin(breaker=breaker)
    if name == "least-connections":
        return LeastConnections(load, breaker=breaker)
    if name == "weighted":
        return Weighted(breaker=breaker)
    raise InvalidArgument(
        "select_policy", f"{name!r} is unknown: use one of {', '.join(POLICIES)}"
    )
