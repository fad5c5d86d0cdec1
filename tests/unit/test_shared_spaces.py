"""Which connections may share a device: only those no packet from the tunnel could confuse."""

from __future__ import annotations

from ipaddress import ip_network

from forwarder.shared import Selectors, choose_space, clash


def sel(near: list[str], far: list[str]) -> Selectors:
    return Selectors(tuple(ip_network(n) for n in near), tuple(ip_network(f) for f in far))


def test_many_clients_of_one_endpoint_share_a_device() -> None:
    # endpoint side: the same near address (the endpoint's), different far ones (the clients')
    a = sel(["10.60.0.1/32"], ["10.60.0.2/32"])
    b = sel(["10.60.0.1/32"], ["10.60.0.3/32"])
    assert not clash(a, b)
    # client side, mirrored: the same far address, different near ones
    mirrored = sel(["10.60.0.2/32"], ["10.60.0.1/32"]), sel(["10.60.0.3/32"], ["10.60.0.1/32"])
    assert not clash(*mirrored)
    assert choose_space({0: [a]}, b) == 0


def test_identical_addresses_need_another_space() -> None:
    a = sel(["10.70.0.2/32"], ["10.70.0.1/32"])
    twin = sel(["10.70.0.2/32"], ["10.70.0.1/32"])
    assert clash(a, twin) and clash(twin, a)
    assert choose_space({0: [a]}, twin) == 1
    assert choose_space({0: [a], 1: [twin]}, sel(["10.70.0.2/32"], ["10.70.0.1/32"])) == 2


def test_routed_prefixes_count_as_addresses() -> None:
    # a client routing 10.0.0.0/8 into the vWire clashes with another whose far side is inside
    wide = sel(["10.70.0.2/32"], ["10.70.0.1/32", "10.0.0.0/8"])
    inside = sel(["10.70.0.2/32"], ["10.9.9.9/32"])
    assert clash(wide, inside)
    assert not clash(wide, sel(["10.70.0.3/32"], ["10.9.9.9/32"]))


def test_families_never_overlap() -> None:
    v4 = sel(["10.70.0.2/32"], ["10.70.0.1/32"])
    v6 = sel(["fd00::2/128"], ["fd00::1/128"])
    assert not clash(v4, v6)
    assert choose_space({0: [v4]}, v6) == 0


def test_the_lowest_free_space_is_chosen() -> None:
    a = sel(["10.70.0.2/32"], ["10.70.0.1/32"])
    other = sel(["10.80.0.2/32"], ["10.80.0.1/32"])
    assert choose_space({0: [a, other], 1: [other]}, sel(["10.70.0.2/32"], ["10.70.0.1/32"])) == 1
    assert choose_space({1: [a]}, a) == 0  # space 0 emptied: taken again
