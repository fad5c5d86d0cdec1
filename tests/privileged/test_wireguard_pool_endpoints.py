"""wireguard-go daemons kept ready with their TUN already in an endpoint's namespace
(``UserspaceBackend(pool_size=N, pool_namespaces=M)``), real namespaces and real wireguard-go:
a preparation for that namespace takes one and needs no move; the namespaces kept are bounded;
a namespace that disappears takes its pooled daemons with it and is kept no more; nothing is
left after close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from forwarder.kernel.netlink import NetlinkKernel
from forwarder.vwire import RemotePreparation, prepare_remote
from forwarder.wireguard import UserspaceBackend, generate_keypair
from forwarder.wireguard.pool import POOL_ALIAS
from forwarder.wireguard.uapi import SOCKET_DIR

from .conftest import netns_path, run
from .test_forwarder_scale import daemons_in
from .test_vwire_remote import wait_until


def index_of(ns: str, name: str) -> str:
    return run("cat", f"/sys/class/net/{name}/ifindex", netns=ns).stdout.strip()


async def test_a_tunnel_ready_in_the_endpoint_namespace_needs_no_move_and_leaves_nothing(
    netns: Callable[[str], str],
) -> None:
    node, first_ns, second_ns = netns("pnode"), netns("pep1"), netns("pep2")
    run("ip", "link", "add", "ul", "type", "veth", "peer", "name", "ulp", netns=node)
    underlay, first, second = netns_path(node), netns_path(first_ns), netns_path(second_ns)
    kernel = NetlinkKernel()
    backend = UserspaceBackend(kernel=kernel, pool_size=1, pool_namespaces=1)
    sockets_before = set(SOCKET_DIR.glob("vwp*.sock"))

    def prep(cid: str, ns: str, port: int) -> RemotePreparation:
        return RemotePreparation(cid, generate_keypair()[0], "ul", 1420, underlay, port, ns,
                                 ready_in_workload=True)

    try:
        # nothing kept for this namespace yet: made in the underlay and moved; the pool now
        # keeps one daemon ready in it (and one in the underlay)
        made = await prepare_remote(kernel, backend, prep("c1", first, 51820))
        assert made.workload_ns == first
        await asyncio.wait_for(backend.pool.filled(underlay, first), 20)
        assert backend.pool.ready(underlay, first) == 1 and backend.pool.kept() == [first]
        pooled = await kernel.list_links(first, alias_prefix=POOL_ALIAS)
        assert len(pooled) == 1 and pooled[0].mtu == 1420
        index = index_of(first_ns, pooled[0].name)
        # the next preparation for it takes the daemon whose TUN is already there
        taken = await prepare_remote(kernel, backend, prep("c2", first, 51821))
        assert taken.workload_ns == first
        assert index_of(first_ns, taken.wg_name) == index  # the pooled TUN, renamed in place
        link = await kernel.get_link(first, taken.wg_name)
        assert link.mtu == 1420 and (link.alias or "").startswith("vwire:c2")
        assert backend.daemon_mtu(taken.wg_name) == 1420
        assert taken.actual_port == 51821
        await made.discard()
        await taken.discard()
        # one namespace is kept: asking for another drops the first (its daemon stopped)
        await asyncio.wait_for(backend.pool.filled(underlay, first), 20)
        other = await prepare_remote(kernel, backend, prep("c3", second, 51822))
        await other.discard()
        assert backend.pool.kept() == [second]
        assert await wait_until(lambda: daemons_in(underlay) and not any(
            link for link in run("ip", "-o", "link", netns=first_ns).stdout.splitlines()
            if POOL_ALIAS in link))
        # the namespace disappears: its pooled daemon ends with it and it is kept no more
        await asyncio.wait_for(backend.pool.filled(underlay, second), 20)
        assert backend.pool.ready(underlay, second) == 1
        before = len(daemons_in(underlay))
        run("ip", "netns", "del", second_ns)
        assert await wait_until(lambda: backend.pool.kept() == [], limit=10)
        assert len(daemons_in(underlay)) == before - 1
    finally:
        await backend.close()
        kernel.close()
    assert daemons_in(underlay) == []
    assert POOL_ALIAS not in run("ip", "-o", "link", netns=first_ns).stdout
    assert set(SOCKET_DIR.glob("vwp*.sock")) <= sockets_before  # none of this test's left
