"""Healing: an endpoint's death moves the client to another endpoint of the service on another
node; a forwarder killed and started again is healed through. Heal time = from just before the
fault to the first answered ping over the healed connection (:func:`lab.heal.measure_heal`).
After a forwarder restart the endpoint keeps one vWire: the heal updates what the surviving hops
hold instead of leaving an orphan behind until it expires.

Goals: endpoint death < 1 s, forwarder restart < 2 s. The tests assert the goals with a margin
(the machine has 2 cores and runs the whole fabric) and print the measured times.
"""

from __future__ import annotations

from ipaddress import ip_interface, ip_network

import pytest

from lab import network
from lab.heal import measure_heal
from tests.e2e.conftest import MakeFabric

ENDPOINT_GOAL, FORWARDER_GOAL = 1.0, 2.0
MARGIN = 1.5


async def test_endpoint_death_heals_to_another_endpoint(
    make_fabric: MakeFabric, record_property: pytest.RecordProperty
) -> None:
    fabric = await make_fabric(nodes=3)
    pools = {"nse-a": ("10.60.0.0/16", "fd00:60::/64"), "nse-b": ("10.64.0.0/16", "fd00:64::/64")}
    for name, node in (("nse-a", 2), ("nse-b", 3)):
        await fabric.add_endpoint(name, ["db"], node=node, cidrs=pools[name])
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"])
    victim = client.connection()["network_service_endpoint_name"]
    survivor = {"nse-a": "nse-b", "nse-b": "nse-a"}[victim]

    heal = await measure_heal(client, lambda: fabric.kill(victim))

    print(f"endpoint death heal: {heal.seconds * 1000:.0f} ms ({victim} -> {survivor})")
    record_property("endpoint_heal_seconds", heal.seconds)
    assert heal.after["network_service_endpoint_name"] == survivor
    assert heal.after["id"] == heal.before["id"], "healing keeps the client's connection id"
    assert heal.seconds < ENDPOINT_GOAL * MARGIN, f"heal took {heal.seconds:.3f} s"
    survivor_pools = [ip_network(p) for p in pools[survivor]]
    context = heal.after["context"]["ip_context"]
    stale = [a for key in ("src_ip_addrs", "dst_ip_addrs") for a in context.get(key, [])
             if not any(ip_interface(a).ip in pool for pool in survivor_pools)]
    assert not stale, (
        f"after healing to {survivor} the connection still carries {victim}'s addresses {stale} "
        f"(IP context {context}): a connection moved to another endpoint must drop the old "
        "endpoint's addresses and routes")


@pytest.mark.parametrize("node", [1, 2], ids=["client-node", "endpoint-node"])
async def test_forwarder_restart_heals(
    make_fabric: MakeFabric, record_property: pytest.RecordProperty, node: int
) -> None:
    fabric = await make_fabric(nodes=2)
    endpoint = await fabric.add_endpoint("nse-a", ["db"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"])
    forwarder = fabric.node(node).forwarder_process

    def restart() -> None:
        fabric.kill(forwarder)
        fabric.processes.restart(forwarder)

    heal = await measure_heal(client, restart)

    print(f"forwarder restart heal (n{node}): {heal.seconds * 1000:.0f} ms")
    record_property("forwarder_heal_seconds", heal.seconds)
    assert heal.after["network_service_endpoint_name"] == "nse-a"
    assert heal.seconds < FORWARDER_GOAL * MARGIN, f"heal took {heal.seconds:.3f} s"
    assert len(network.vwire_links(endpoint.netns)) == 1, network.vwire_links(endpoint.netns)
