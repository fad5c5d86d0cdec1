"""Endpoint selection: which endpoints may serve a client, which one to use, which to avoid.

* :mod:`sdk.select.match`: :func:`candidates`, NSM's NetworkService ``matches`` semantics.
* :mod:`sdk.select.policy`: :class:`RoundRobin`, :class:`LeastConnections`, :class:`Weighted`.
* :mod:`sdk.select.breaker`: :class:`CircuitBreaker`, per-endpoint ejection with back-off.
* :mod:`sdk.select.backoff`: :func:`delays`, bounded exponential back-off with jitter.

All pure logic: no I/O, clocks and random sources injectable.
"""

from sdk.select.backoff import delays, exponential
from sdk.select.breaker import BreakerState, CircuitBreaker
from sdk.select.match import WeightedCandidate, candidates
from sdk.select.policy import LeastConnections, Policy, RoundRobin, Weighted

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "LeastConnections",
    "Policy",
    "RoundRobin",
    "Weighted",
    "WeightedCandidate",
    "candidates",
    "delays",
    "exponential",
]
