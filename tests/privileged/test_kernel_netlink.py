"""The netlink kernel port against real namespaces (root)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from forwarder.kernel import Address, Neighbour, Route, Rule, real_kernel
from forwarder.kernel.netlink import _translate
from sdk.errors import (
    AlreadyExists,
    DataplaneError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

from .conftest import netns_path, run


async def test_typo_namespace_is_not_found_and_not_created() -> None:
    kernel = real_kernel()
    missing = "/var/run/netns/vwt-typo-does-not-exist"
    with pytest.raises(NotFound, match="does not exist"):
        await kernel.list_links(missing)
    with pytest.raises(NotFound):
        await kernel.create_veth("a0", None, "b0", missing)
    assert not os.path.exists(missing)
    assert "vwt-typo" not in run("ip", "netns", "list").stdout
    with pytest.raises(InvalidArgument, match="not a network namespace"):
        await kernel.resolve_netns("/proc/self/ns/uts")


async def test_namespace_references_resolve(netns: Callable[[str], str]) -> None:
    kernel = real_kernel()
    path = netns_path(netns("ref"))
    assert await kernel.resolve_netns(f"file://{path}") == path
    st = os.stat(path)
    assert await kernel.resolve_netns(f"inode://{st.st_dev}/{st.st_ino}") == path
    assert path in await kernel.list_namespaces()
    with pytest.raises(NotFound):
        await kernel.resolve_netns("inode://1/2")


async def test_links_addresses_routes_rules_neighbours(
    netns: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise AssertionError("the kernel port must not fork")

    monkeypatch.setattr(os, "fork", no_fork)
    kernel = real_kernel()
    a, b = netns_path(netns("a")), netns_path(netns("b"))
    await kernel.create_veth("x0", a, "x0", b)
    with pytest.raises(AlreadyExists, match="exists"):
        await kernel.create_veth("x0", a, "y0", b)
    await kernel.set_link(a, "x0", mtu=1400, alias="vwire:test")
    with pytest.raises(InvalidArgument, match="mtu"):
        await kernel.set_link(a, "x0", mtu=10)
    await kernel.add_address(a, "x0", "10.0.0.1/32")
    await kernel.add_address(a, "x0", "fd00::1/128")
    await kernel.set_link(a, "x0", up=True)
    assert await kernel.list_addresses(a, "x0") == ["10.0.0.1/32", "fd00::1/128"]
    link = await kernel.get_link(a, "x0")
    assert (link.kind, link.mtu, link.up, link.alias) == ("veth", 1400, True, "vwire:test")
    assert [x.name for x in await kernel.list_links(a, "vwire:")] == ["x0"]

    routes = [
        Route("10.0.0.2/32", "x0"),
        Route("10.5.0.0/16", "x0", gateway="10.0.0.2"),
        Route("10.6.0.0/16", "x0", gateway="10.9.9.9", onlink=True, table=100),
        Route("fd00::2/128", "x0"),
        Route("fd05::/64", "x0", gateway="fd00::2"),
    ]
    for route in routes:
        await kernel.add_route(a, route)
    with pytest.raises(AlreadyExists):
        await kernel.add_route(a, routes[1])
    assert set(await kernel.list_routes(a)) == {r for r in routes if r.table == 254}
    assert await kernel.list_routes(a, table=100) == [routes[2]]
    with pytest.raises(NotFound):
        await kernel.delete_route(a, Route("10.7.0.0/16", "x0"))
    with pytest.raises(NotFound, match="does not exist"):
        await kernel.add_route(a, Route("10.7.0.0/16", "nope0"))

    rule = Rule(priority=1000, table=100, family=socket.AF_INET, src="10.0.0.1/32", iif="x0")
    await kernel.add_rule(a, rule)
    with pytest.raises(AlreadyExists):
        await kernel.add_rule(a, rule)
    assert await kernel.list_rules(a) == [rule]
    await kernel.delete_rule(a, rule)
    assert await kernel.list_rules(a) == []
    with pytest.raises(NotFound):
        await kernel.delete_rule(a, rule)

    neighbour = Neighbour("x0", "10.0.0.2", "02:00:00:00:00:02")
    await kernel.add_neighbour(a, neighbour)
    await kernel.add_neighbour(a, neighbour)  # a replace: again is fine
    assert (
        "10.0.0.2 dev x0 lladdr 02:00:00:00:00:02 PERMANENT"
        in run("ip", "neigh", "show", netns=os.path.basename(a)).stdout
    )
    await kernel.delete_neighbour(a, neighbour)

    await kernel.delete_address(a, "x0", "fd00::1/128")
    with pytest.raises(NotFound):
        await kernel.delete_address(a, "x0", "fd00::1/128")
    stats = await kernel.link_stats(a, "x0")
    assert stats.rx_bytes >= 0 and stats.tx_packets >= 0

    await kernel.set_link(a, "x0", up=False)
    await kernel.set_link(a, "x0", new_name="x1")
    await kernel.move_link(a, "x1", b)
    assert {x.name for x in await kernel.list_links(b)} == {"lo", "x0", "x1"}
    await kernel.delete_link(b, "x1")
    assert [x.name for x in await kernel.list_links(b)] == ["lo"]
    with pytest.raises(NotFound):
        await kernel.delete_link(b, "x1")


def test_netlink_errors_are_translated() -> None:
    assert isinstance(_translate(NetlinkError(17), "add x"), AlreadyExists)
    assert isinstance(_translate(NetlinkError(19), "set x"), NotFound)
    unsupported = _translate(NetlinkError(95), "add wireguard")
    assert isinstance(unsupported, FailedPrecondition)
    assert "kernel lacks this feature" in str(unsupported)
    assert isinstance(_translate(NetlinkError(22), "set mtu"), InvalidArgument)


async def test_entries_in_one_call_all_or_none(netns: Callable[[str], str]) -> None:
    kernel = real_kernel()
    a, b = netns_path(netns("ba")), netns_path(netns("bb"))
    await kernel.create_veth("y0", a, "y0", b)
    await kernel.set_link(a, "y0", up=True)
    entries = [
        Address("y0", "10.3.0.1/32"),
        Address("y0", "fd03::1/128"),
        Neighbour("y0", "169.254.0.1", "02:00:00:00:00:03"),
        Route("10.4.0.0/16", "y0", gateway="169.254.0.1", onlink=True, table=300),
        Route("fd04::/64", "y0", table=300),
        Rule(300, 300, socket.AF_INET, src="10.3.0.1/32", iif="y0"),
        Rule(300, 300, socket.AF_INET6, src="fd04::/64", dst="fd03::1/128", iif="y0"),
    ]
    await kernel.add_all(a, entries)
    assert await kernel.list_addresses(a, "y0") == ["10.3.0.1/32", "fd03::1/128"]
    assert set(await kernel.list_routes(a, table=300)) == set(entries[3:5])
    assert set(await kernel.list_rules(a)) == set(entries[5:])
    await kernel.delete_all(a, entries[3:])
    assert await kernel.list_routes(a, table=300) == [] and await kernel.list_rules(a) == []
    await kernel.delete_all(a, entries[3:])  # gone already: nothing to do
    # A clash with a route that was there: what the call added goes, the old route stays.
    await kernel.add_route(a, entries[4])
    with pytest.raises(AlreadyExists, match="fd04::/64"):
        await kernel.add_all(a, [Address("y0", "10.3.0.9/32"), *entries[3:]])
    assert await kernel.list_addresses(a, "y0") == ["10.3.0.1/32", "fd03::1/128"]
    assert await kernel.list_routes(a, table=300) == [entries[4]]
    # An unknown device and a value the kernel refuses: the same.
    with pytest.raises(NotFound, match="nope0"):
        await kernel.add_all(a, [entries[3], Route("10.5.0.0/16", "nope0", table=300)])
    with pytest.raises(DataplaneError, match="unreachable"):
        await kernel.add_all(a, [entries[3], Route("10.6.0.0/16", "y0", gateway="10.7.0.1",
                                                   table=300)])  # gateway not on link
    assert await kernel.list_routes(a, table=300) == [entries[4]]


def _ip_counters(netns: str, name: str) -> tuple[int, int, int, int]:
    (link,) = json.loads(run("ip", "-j", "-s", "link", "show", name,
                             netns=os.path.basename(netns)).stdout)
    stats = link["stats64"]
    return (stats["rx"]["bytes"], stats["tx"]["bytes"], stats["rx"]["packets"],
            stats["tx"]["packets"])


async def test_link_counters_match_what_ip_shows(netns: Callable[[str], str]) -> None:
    kernel = real_kernel()
    a, b = netns_path(netns("ca")), netns_path(netns("cb"))
    await kernel.create_veth("z0", a, "z0", b)
    for path, address in ((a, "10.8.0.1/24"), (b, "10.8.0.2/24")):
        await kernel.add_address(path, "z0", address)
        await kernel.set_link(path, "z0", up=True)
    run("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.8.0.2", netns=os.path.basename(a))
    before = _ip_counters(a, "z0")
    stats = await kernel.link_stats(a, "z0")
    after = _ip_counters(a, "z0")
    ours = (stats.rx_bytes, stats.tx_bytes, stats.rx_packets, stats.tx_packets)
    assert all(x <= y <= z for x, y, z in zip(before, ours, after, strict=True))
    assert stats.tx_packets >= 3 and stats.rx_packets >= 3  # the echo requests and replies
    with pytest.raises(NotFound, match="nope0"):
        await kernel.link_stats(a, "nope0")
