"""The isolation facts docs/performance.md's shared-device decision rests on, with real parts.

Built with ``bench.shareddevice``'s pieces (real namespaces named ``vwt-<pid>-shd-...``, real
wireguard-go, ``ip``, ``nft``; packets counted by nftables counters in the receiving namespace):

- a device per vWire keeps two connections with the same inner addresses apart, and an attacker
  in one workload namespace reaches nothing of the other connection;
- one shared device per node pair lets that attacker reach the other connection, spoofing its
  client's address included, until the nftables set is loaded; with it the connections' own
  traffic still passes and every probe is blocked;
- the same inner addresses twice on one shared device are refused by the node's routing table;
  a second device pair chosen by ``ip rule iif`` keeps them apart.

Every pair of nodes is torn down (daemons stopped, namespaces deleted) whatever happens, and the
test checks that nothing of it is left.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest

from bench.dataplane import sh
from bench.shareddevice import (
    FILTER_TABLE,
    HOP,
    OVERLAP,
    UID,
    Conn,
    NodePair,
    arrives,
    attack,
    handshake,
    load_filter,
    make_connections,
    per_vwire_connect,
    probes,
    shared_connect,
    shared_device,
)
from tests.privileged.conftest import NETNS_PREFIX, run

pytestmark = pytest.mark.timeout(120)

VIA_HOP = ["via", HOP, "dev", "nsm0"]


def _left_over(pair: NodePair) -> list[str]:
    """Namespaces of ``pair`` still present, and its daemons still running."""
    names = run("ip", "netns", "list").stdout
    left = [n.split()[0] for n in names.splitlines() if n.startswith(pair.ns(""))]
    left += [d.ifname for d in pair.daemons if d.process and d.process.returncode is None]
    return left


@pytest.fixture
async def node_pair() -> AsyncIterator[Callable[[str], NodePair]]:
    """Factory of node pairs with the privileged tests' namespace prefix; all torn down."""
    made: list[NodePair] = []

    def make(tag: str) -> NodePair:
        made.append(NodePair(tag, prefix=f"{NETNS_PREFIX}{os.getpid()}-shd"))
        return made[-1]

    yield make
    for pair in made:
        await pair.teardown()
        assert not _left_over(pair)


async def test_devices_per_vwire_keep_connections_with_the_same_addresses_apart(
    node_pair: Callable[[str], NodePair],
) -> None:
    pair = node_pair("pv")
    await pair.build()
    first, second = await make_connections(pair, "per_vwire", 2)
    assert (first.client_ip, first.endpoint_ip) == (second.client_ip, second.endpoint_ip)
    for conn in (first, second):
        await per_vwire_connect(pair, conn)
    await handshake([first, second])
    await probes([first.endpoint, second.endpoint, second.client, pair.nodes[0]])

    assert await arrives(second.endpoint, second.client, *OVERLAP)
    assert not await arrives(second.endpoint, first.client, *OVERLAP)
    reach = await attack(first, second, ["dev", f"wv{UID}000a"], pair.nodes[0])
    assert not any(reach.values()), reach


async def test_a_shared_device_needs_the_nftables_set_to_keep_workloads_apart(
    node_pair: Callable[[str], NodePair],
) -> None:
    pair = node_pair("sh")
    await pair.build()
    first, second = await make_connections(pair, "shared", 2)
    dev = await shared_device(pair, 0)
    for conn in (first, second):
        await shared_connect(pair, dev, conn, filtered=False)
    await handshake([first, second])
    await probes([second.endpoint, second.client, pair.nodes[0]])

    open_reach = await attack(first, second, VIA_HOP, pair.nodes[0])
    assert all(open_reach.values()), open_reach  # the threat is real without a filter

    await load_filter(pair)
    for conn in (first, second):
        for node, mine, theirs in ((pair.nodes[0], conn.client_ip, conn.endpoint_ip),
                                   (pair.nodes[1], conn.endpoint_ip, conn.client_ip)):
            await sh("nft", "add", "element", "ip", FILTER_TABLE, "allow",
                     f"{{ vs{conn.index:03d} . {mine} . {theirs} }}", netns=node)
    await handshake([first, second])  # the connections' own traffic still passes
    filtered = await attack(first, second, VIA_HOP, pair.nodes[0])
    assert not any(filtered.values()), filtered


async def test_the_same_addresses_on_a_shared_device_need_a_device_pair_per_address_space(
    node_pair: Callable[[str], NodePair],
) -> None:
    pair = node_pair("ov")
    await pair.build()
    spaces = [(await pair.workload(f"c{i}"), await pair.workload(f"e{i}")) for i in range(3)]
    await load_filter(pair)
    dev0 = await shared_device(pair, 0)
    first = Conn(0, *spaces[0], *OVERLAP)
    await shared_connect(pair, dev0, first)
    with pytest.raises(RuntimeError, match="File exists"):
        await shared_connect(pair, dev0, Conn(1, *spaces[1], *OVERLAP))

    other = Conn(2, *spaces[2], *OVERLAP)
    await shared_connect(pair, await shared_device(pair, 1), other)
    await handshake([first, other])
    await probes([first.endpoint, other.endpoint])
    assert await arrives(other.endpoint, other.client, *OVERLAP)
    assert not await arrives(first.endpoint, other.client, *OVERLAP)
    assert await arrives(first.endpoint, first.client, *OVERLAP)
    assert not await arrives(other.endpoint, first.client, *OVERLAP)
