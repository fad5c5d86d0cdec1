"""Two fabrics on one host: one coming up and going down leaves the other's vWires alone.

Every lab fabric names its forwarders ``forwarder-n1``, ``forwarder-n2``..., and a forwarder
sweeps, at start and at stop, the interfaces marked with its name in every namespace of the
host. Before ``forwarder/namelock.py`` the second fabric's forwarders deleted the first one's
live vWires (a remote vWire's tunnel device deleted under its wireguard-go, which ended with
exit 0 and was restarted; a local veth simply gone): the wireguard-go ends of ``bench.scale``
while tests ran beside it.
"""

from __future__ import annotations

import re

from lab.fabric import Fabric
from lab.observe import endpoint_address, ping, wait_for
from tests.e2e.conftest import MakeFabric


def _links(fabric: Fabric) -> dict[str, list[str]]:
    """The fabric's vWire interfaces as ``ip -d link`` shows them, without their operational
    state: a veth made a moment ago reads UNKNOWN, then UP. A replaced interface still shows
    (it gets a new index)."""
    return {ns: [re.sub(r" state \S+", "", line) for line in lines]
            for ns, lines in fabric.vwire_links().items()}


def _name(line: str) -> str:
    """The interface name of an ``ip -o link`` line (``2: nsm0@if4: <...`` -> ``nsm0``)."""
    return line.split(":")[1].strip().split("@")[0]


async def test_a_second_fabric_up_and_down_leaves_the_first_ones_vwires_alone(
    make_fabric: MakeFabric,
) -> None:
    first = await make_fabric(nodes=2)
    await first.add_endpoint("nse-remote", ["remote-svc"], node=2)
    await first.add_endpoint("nse-local", ["local-svc"], node=1,
                             cidrs=("10.61.0.0/16", "fd00:61::/64"))
    client = await first.add_client("nsc", node=1,
                                    urls=["kernel://remote-svc/nsm0", "kernel://local-svc/nsm1"])
    daemons = first.wireguard_processes()
    links = _links(first)
    assert len(daemons) == 2, daemons  # one wireguard-go per side of the remote vWire
    # The remote vWire's two ends, the local veth pair and, beside a tunnel made in its
    # workload's namespace, the daemon's namesake "shadow" in the node's (docs/dataplane.md).
    shadows = [line for lines in links.values() for line in lines
               if _name(line) in daemons.values()]
    assert len(shadows) <= 2, shadows
    assert sum(len(names) for names in links.values()) - len(shadows) == 4, links

    second = await make_fabric(nodes=2)  # its forwarders carry the same names
    second.down(grace=3.0)  # and stop again: both sweeps ran

    assert first.wireguard_processes() == daemons, "the first fabric's daemons were replaced"
    assert _links(first) == links
    for service in ("remote-svc", "local-svc"):
        target = endpoint_address(client.connection(service))

        async def answers(address: str = target) -> bool:
            return await ping(client.netns, address, wait=0.5)

        await wait_for(f"{service}: ping {target}", answers, 10)
