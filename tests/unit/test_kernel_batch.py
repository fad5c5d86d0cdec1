"""KernelPort.add_all / delete_all on the fake kernel: in order, all or none, every one tried."""

from __future__ import annotations

import socket

import pytest

from forwarder.kernel import Address, FakeKernel, Neighbour, Route, Rule
from sdk.errors import AlreadyExists, DataplaneError, NotFound

NS = "/var/run/netns/w"


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.add_netns(NS)
    k.add_link(NS, "eth0", "veth", up=True)
    return k


ENTRIES = [
    Address("eth0", "10.1.0.2/32"),
    Neighbour("eth0", "169.254.0.1", "02:00:00:00:00:09"),
    Route("10.9.0.0/16", "eth0", table=1001),
    Rule(100, 1001, socket.AF_INET, src="10.1.0.2/32", iif="eth0"),
]


async def test_entries_are_added_in_order_and_deleted(kernel: FakeKernel) -> None:
    before = kernel.snapshot()
    await kernel.add_all(NS, ENTRIES)
    assert [c.split("(")[0] for c in kernel.calls[1:]] == [
        "add_address", "add_neighbour", "add_route", "add_rule"]
    assert await kernel.list_addresses(NS, "eth0") == ["10.1.0.2/32"]
    assert await kernel.list_routes(NS, table=1001) == [ENTRIES[2]]
    assert await kernel.list_rules(NS) == [ENTRIES[3]]
    await kernel.delete_all(NS, ENTRIES)
    assert kernel.snapshot() == before


async def test_a_failure_takes_back_what_the_call_added_and_nothing_else(
    kernel: FakeKernel,
) -> None:
    there = Route("10.9.0.0/16", "eth0", table=1001)
    await kernel.add_route(NS, there)  # already there: the batch's route clashes with it
    before = kernel.snapshot()
    with pytest.raises(AlreadyExists):
        await kernel.add_all(NS, ENTRIES)
    assert kernel.snapshot() == before  # the address and neighbour went, the old route stayed
    assert await kernel.list_routes(NS, table=1001) == [there]


async def test_delete_all_skips_what_is_gone_and_tries_every_entry(kernel: FakeKernel) -> None:
    await kernel.add_all(NS, ENTRIES[2:])
    await kernel.delete_all(NS, ENTRIES)  # the address and neighbour were never added
    assert await kernel.list_rules(NS) == [] and await kernel.list_routes(NS, 1001) == []
    await kernel.add_all(NS, ENTRIES[2:])
    kernel.fail_on("delete_route")
    with pytest.raises(DataplaneError, match="injected"):
        await kernel.delete_all(NS, ENTRIES[2:])
    assert await kernel.list_rules(NS) == []  # tried after the route's failure
    with pytest.raises(NotFound):
        await kernel.delete_rule(NS, ENTRIES[3])
