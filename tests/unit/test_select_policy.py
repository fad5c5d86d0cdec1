"""sdk.select.policy: round robin, least connections, weighted (smooth and random), NotFound."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import NotFound
from sdk.select import (
    CircuitBreaker,
    LeastConnections,
    Policy,
    RoundRobin,
    Weighted,
    WeightedCandidate,
)


def cands(**weights: int) -> list[WeightedCandidate]:
    return [WeightedCandidate(NetworkServiceEndpoint(name=n), w) for n, w in weights.items()]


def picks(policy: Policy, candidates: list[WeightedCandidate], n: int, svc: str = "s") -> list[str]:
    return [policy.pick(svc, candidates).name for _ in range(n)]


def test_round_robin_rotates_fairly_per_service() -> None:
    policy = RoundRobin()
    three = cands(a=1, b=5, c=1)
    assert picks(policy, three, 7) == ["a", "b", "c", "a", "b", "c", "a"]
    assert picks(policy, three, 2, svc="other") == ["a", "b"]  # independent per service
    assert picks(policy, three, 1) == ["b"]


def test_round_robin_skips_excluded_without_losing_its_place() -> None:
    policy = RoundRobin()
    three = cands(a=1, b=1, c=1)
    assert policy.pick("s", three).name == "a"
    assert policy.pick("s", three, exclude={"b"}).name == "c"
    assert policy.pick("s", three).name == "a"
    assert policy.pick("s", cands(x=1, y=1)).name == "x"  # last pick gone: start over


def test_least_connections_picks_lowest_load_per_weight_and_rotates_ties() -> None:
    load = {"a": 5, "b": 2, "c": 2}
    policy = LeastConnections(load.__getitem__)
    three = cands(a=1, b=1, c=1)
    assert picks(policy, three, 3) == ["b", "c", "b"]
    assert policy.pick("s", cands(a=10, b=1, c=1)).name == "a"  # 5/10 < 2/1
    assert policy.pick("s", three, exclude={"b", "c"}).name == "a"


def test_smooth_weighted_90_10_is_exact_and_interleaved() -> None:
    policy = Weighted()
    split = cands(big=90, small=10)
    out = picks(policy, split, 1000)
    assert Counter(out) == {"big": 900, "small": 100}
    assert out[:10].count("small") == 1  # spread out, not 90 in a row
    assert picks(Weighted(), cands(a=5, b=1, c=1), 7) == ["a", "a", "b", "a", "c", "a", "a"]


def test_smooth_weighted_with_exclusion_and_changing_set() -> None:
    policy = Weighted()
    split = cands(a=3, b=1)
    assert Counter(policy.pick("s", split, exclude={"a"}).name for _ in range(4)) == {"b": 4}
    assert Counter(picks(policy, cands(a=3, b=1, c=4), 800)) == {"a": 300, "b": 100, "c": 400}


def test_random_weighted_is_reproducible_and_close_to_weights() -> None:
    split = cands(big=90, small=10)
    first = picks(Weighted(randomized=True, rng=random.Random(42)), split, 1000)
    second = picks(Weighted(randomized=True, rng=random.Random(42)), split, 1000)
    assert first == second
    assert 850 <= Counter(first)["big"] <= 950


def test_not_found_when_no_candidate() -> None:
    with pytest.raises(NotFound, match=r"'db'.*no endpoint is registered"):
        RoundRobin().pick("db", [])


def test_not_found_when_all_excluded_or_ejected() -> None:
    breaker = CircuitBreaker(clock=lambda: 0.0)
    breaker.record_failure("b")
    policy = RoundRobin(breaker=breaker)
    with pytest.raises(NotFound) as caught:
        policy.pick("db", cands(a=1, b=1), exclude={"a"})
    message = str(caught.value)
    assert "'db'" in message and "all 2 candidate endpoints are unavailable" in message
    assert "1 excluded (already tried): a" in message
    assert "1 ejected by the circuit breaker" in message and ": b" in message


MAKERS: list[Callable[[CircuitBreaker], Policy]] = [
    lambda b: RoundRobin(breaker=b),
    lambda b: Weighted(breaker=b),
    lambda b: Weighted(randomized=True, rng=random.Random(3), breaker=b),
    lambda b: LeastConnections(len, breaker=b),
]


@pytest.mark.parametrize("make", MAKERS)
def test_every_policy_skips_ejected_and_takes_the_half_open_trial(
    make: Callable[[CircuitBreaker], Policy],
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(clock=lambda: now[0])
    policy = make(breaker)
    two = cands(a=1, b=1)
    breaker.record_failure("a")
    assert {policy.pick("s", two).name for _ in range(4)} == {"b"}
    now[0] = 1.0  # half-open: a single trial
    names = [policy.pick("s", two).name for _ in range(4)]
    assert names.count("a") == 1
    breaker.record_success("a")
    assert "a" in {policy.pick("s", two).name for _ in range(4)}
