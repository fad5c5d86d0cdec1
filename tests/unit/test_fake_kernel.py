"""The fake kernel behaves like the real one where the data plane relies on it."""

from __future__ import annotations

import os
import socket

import pytest

from forwarder.kernel import FakeKernel, LinkStats, Neighbour, Route, Rule
from forwarder.kernel.nsref import InodeRef, PathRef, parse_ns_ref
from sdk.errors import AlreadyExists, DataplaneError, InvalidArgument, NotFound

A, B = "/var/run/netns/a", "/var/run/netns/b"


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.add_netns(A)
    k.add_netns(B)
    return k


async def test_veth_ends_live_in_their_namespaces_and_die_together(kernel: FakeKernel) -> None:
    await kernel.create_veth("x0", A, "y0", B)
    assert (await kernel.get_link(A, "x0")).kind == "veth"
    assert (await kernel.get_link(B, "y0")).up is False
    await kernel.delete_link(B, "y0")
    with pytest.raises(NotFound):
        await kernel.get_link(A, "x0")


async def test_duplicate_names_and_missing_things_raise(kernel: FakeKernel) -> None:
    await kernel.create_veth("x0", A, "y0", B)
    with pytest.raises(AlreadyExists):
        await kernel.create_veth("x0", A, "z0", B)
    assert [link.name for link in await kernel.list_links(B)] == ["lo", "y0"]
    with pytest.raises(NotFound):
        await kernel.set_link(A, "nope", up=True)
    with pytest.raises(NotFound):
        await kernel.create_veth("q0", "/var/run/netns/typo", "q1", B)
    assert "/var/run/netns/typo" not in await kernel.list_namespaces()
    with pytest.raises(InvalidArgument):
        await kernel.create_veth("a-name-that-is-too-long", A, "q1", B)


async def test_addresses_routes_and_gateway_reachability(kernel: FakeKernel) -> None:
    await kernel.create_veth("x0", A, "y0", B)
    await kernel.add_address(A, "x0", "10.0.0.1/32")
    with pytest.raises(AlreadyExists):
        await kernel.add_address(A, "x0", "10.0.0.1/32")
    with pytest.raises(DataplaneError, match="unreachable"):
        await kernel.add_route(A, Route("10.5.0.0/16", "x0", gateway="10.0.0.2"))
    await kernel.add_route(A, Route("10.0.0.2/32", "x0"))
    await kernel.add_route(A, Route("10.5.0.0/16", "x0", gateway="10.0.0.2"))
    await kernel.add_route(A, Route("10.6.0.0/16", "x0", gateway="10.9.9.9", onlink=True, table=7))
    assert len(await kernel.list_routes(A)) == 2
    assert len(await kernel.list_routes(A, table=7)) == 1
    with pytest.raises(NotFound):
        await kernel.delete_route(A, Route("10.8.0.0/16", "x0"))
    await kernel.delete_link(A, "x0")
    assert await kernel.list_routes(A) == []


async def test_rename_move_alias_stats_rules_neighbours(kernel: FakeKernel) -> None:
    kernel.add_link(None, "tun0", "tun")
    await kernel.set_link(None, "tun0", alias="vwire:c1", mtu=1420)
    await kernel.move_link(None, "tun0", A)
    await kernel.set_link(A, "tun0", new_name="nsm0")
    link = await kernel.get_link(A, "nsm0")
    assert (link.alias, link.mtu) == ("vwire:c1", 1420)
    assert [x.name for x in await kernel.list_links(A, alias_prefix="vwire:")] == ["nsm0"]
    kernel.count_traffic(A, "nsm0", LinkStats(1, 2, 3, 4))
    assert (await kernel.link_stats(A, "nsm0")).tx_bytes == 2
    rule = Rule(priority=100, table=7, family=socket.AF_INET, src="10.0.0.1/32")
    await kernel.add_rule(A, rule)
    with pytest.raises(AlreadyExists):
        await kernel.add_rule(A, rule)
    await kernel.delete_rule(A, rule)
    await kernel.add_neighbour(A, Neighbour("nsm0", "10.0.0.2", "02:00:00:00:00:02"))
    await kernel.delete_neighbour(A, Neighbour("nsm0", "10.0.0.2", "02:00:00:00:00:02"))
    with pytest.raises(NotFound):
        await kernel.delete_neighbour(A, Neighbour("nsm0", "10.0.0.2", "02:00:00:00:00:02"))


async def test_injected_failure_hits_the_nth_call_once(kernel: FakeKernel) -> None:
    kernel.fail_on("create_veth", nth=2)
    await kernel.create_veth("x0", A, "y0", B)
    with pytest.raises(DataplaneError, match="injected"):
        await kernel.create_veth("x1", A, "y1", B)
    await kernel.create_veth("x2", A, "y2", B)


async def test_namespace_references(kernel: FakeKernel) -> None:
    assert await kernel.resolve_netns("file:///var/run/netns/a") == A
    assert await kernel.resolve_netns("/var/run/netns//b/") == B
    with pytest.raises(NotFound):
        await kernel.resolve_netns("/var/run/netns/c")
    with pytest.raises(InvalidArgument, match="netns"):
        await kernel.resolve_netns("a")
    assert parse_ns_ref("inode://4/4026531993") == InodeRef(4, 4026531993)
    assert parse_ns_ref("file:///proc/12/ns/net") == PathRef("/proc/12/ns/net")
    for bad in ("", "inode://x/1", "http://x/y", "/proc/../etc/passwd"):
        with pytest.raises(InvalidArgument):
            parse_ns_ref(bad)


async def test_tun_devices_held_or_persistent_and_names_taken_once(kernel: FakeKernel) -> None:
    fd = await kernel.open_tun(A, "t0", packet_info=True)
    assert fd is not None
    os.close(fd)
    assert (await kernel.get_link(A, "t0")).kind == "tun"
    assert await kernel.open_tun(B, "t0", packet_info=False, persist=True) is None
    assert (await kernel.get_link(B, "t0")).up is False
    with pytest.raises(AlreadyExists):
        await kernel.open_tun(B, "t0", packet_info=True)
