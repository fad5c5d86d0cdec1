"""The real ``Xconnect`` element in NetworkService chains, against real namespaces.

Local case: one forwarder chain ``UpdatePath → Begin → Metadata → Xconnect → FarSide`` where the
stub ``FarSide`` stands in for nsmgr and the endpoint (answers KERNEL into the endpoint's
namespace with an IPContext). Remote case: the client-side forwarder chain's next hop is the
endpoint-side forwarder chain (own ``Xconnect``, node B's underlay), followed by the stub
endpoint; the two meet through ``Hop``, which copies the request like a gRPC hop would. Topology
(two nodes joined by an underlay veth, a client namespace on A, an endpoint namespace on B) is
the ``lab`` fixture of :mod:`tests.privileged.test_vwire_remote`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from api.mechanisms import REMOTE, of_class
from api.mechanisms.kernel import KernelMechanism, is_kernel
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import real_kernel
from forwarder.ports import PortPool
from forwarder.restart import LiveVWires, RestartRecovery
from forwarder.specs import Node
from forwarder.vwire import VWire, find_leftovers
from forwarder.wireguard import UserspaceBackend, WireGuardBackend
from forwarder.xconnect import VWIRE, Xconnect
from sdk.errors import NotFound
from sdk.networkservice.begin import Begin
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.updatepath import UpdatePath

from .conftest import netns_path, run
from .test_vwire_local import kernel_state, ping
from .test_vwire_remote import Lab, backend, lab, wait_until, wg_processes

__all__ = ["backend", "lab"]  # fixtures used here and by test_forwarder_restart

CLIENT_IP, ENDPOINT_IP = "172.16.0.1/32", "172.16.0.2/32"


@dataclass
class FarSide(NetworkServiceElement):
    """Stands in for the rest of the path: answers KERNEL into ``netns`` with an IPContext.

    ``netns`` may be a wrong path (to make programming fail). Counts requests and closes.
    """

    netns: str
    requests: int = 0
    closes: list[str] = field(default_factory=list)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.requests += 1
        assert any(is_kernel(m) for m in request.mechanism_preferences)
        conn = Connection()
        conn.CopyFrom(request.connection)
        conn.mechanism.CopyFrom(KernelMechanism(f"file://{self.netns}", "nse0").to_proto())
        ip = conn.context.ip_context
        if not ip.src_ip_addrs:
            ip.src_ip_addrs.append(CLIENT_IP)
            ip.dst_ip_addrs.append(ENDPOINT_IP)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.closes.append(conn.id)


class Hop(NetworkServiceElement):
    """The next node's forwarder, reached as through the nsmgrs: the request and connection are
    copies, only REMOTE mechanism preferences travel (as ``nsmgr.route`` does), and the answer
    comes back pointing at this hop's segment (as ``sdk.networkservice.client.Connect`` does)."""

    def __init__(self, chain: NetworkServiceChain) -> None:
        self.chain = chain

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        sent = NetworkServiceRequest()
        sent.CopyFrom(request)
        kept = of_class(list(sent.mechanism_preferences), REMOTE)
        del sent.mechanism_preferences[:]
        sent.mechanism_preferences.extend(kept)
        conn = await self.chain.run_request(sent)
        conn.path.index, conn.id = request.connection.path.index, request.connection.id
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        sent = Connection()
        sent.CopyFrom(conn)
        await self.chain.run_close(sent)


@dataclass
class Forwarder:
    """One forwarder's chain and the parts a test inspects."""

    name: str
    xconnect: Xconnect
    metadata: Metadata
    chain: NetworkServiceChain
    recovery: RestartRecovery | None = None

    def vwire(self, conn: Connection) -> VWire:
        """The live vWire of ``conn`` (whose path has this forwarder's segment)."""
        seg = next(s for s in conn.path.path_segments if s.name == self.name)
        md = self.metadata.get(seg.id)
        assert md is not None and VWIRE in md, f"{self.name} has no vwire for {seg.id}"
        vwire: VWire = md[VWIRE]
        return vwire

    def live_names(self) -> list[str]:
        """WireGuard names of the vWires registered for restart recovery."""
        return [] if self.xconnect.live is None else self.xconnect.live.names()


def forwarder(
    name: str, node: Node, backend: WireGuardBackend, ports: range, rest: NetworkServiceElement,
    *, recover: bool = False,
) -> Forwarder:
    """``UpdatePath → Begin → Metadata → Xconnect → rest`` (with restart recovery if asked)."""
    kernel = real_kernel()
    live = LiveVWires() if recover else None
    xconnect = Xconnect(kernel, backend, node, PortPool(ports), live)
    metadata = Metadata()
    chain = NetworkServiceChain([UpdatePath(name), Begin(), metadata, xconnect, rest])
    recovery = None
    if live is not None:
        assert isinstance(backend, UserspaceBackend), "restarts exist only with wireguard-go"
        recovery = RestartRecovery(kernel, live)
        recovery.attach(backend)
    return Forwarder(name, xconnect, metadata, chain, recovery)


@dataclass
class Remote:
    client_side: Forwarder
    endpoint_side: Forwarder
    far: FarSide


def remote_forwarders(lab: Lab, backend: WireGuardBackend, *, recover: bool = False) -> Remote:
    """Client-side forwarder on node A whose next hop is node B's forwarder, then the endpoint."""
    far = FarSide(netns_path(lab.endpoint))
    node_b = Node("fwd-b", "10.99.0.2", "ub", netns_path(lab.node_b))
    side_b = forwarder("fwd-b", node_b, backend, range(51840, 51850), far, recover=recover)
    node_a = Node("fwd-a", "10.99.0.1", "ua", netns_path(lab.node_a))
    side_a = forwarder("fwd-a", node_a, backend, range(51820, 51830), Hop(side_b.chain),
                       recover=recover)
    return Remote(side_a, side_b, far)


def client_request(lab: Lab, conn: Connection | None = None) -> NetworkServiceRequest:
    """The client's request: KERNEL into its namespace, interface ``nsm0`` (a refresh if conn)."""
    request = NetworkServiceRequest(
        connection=conn or Connection(id="conn-1", network_service="svc"),
        mechanism_preferences=[
            KernelMechanism(f"file://{netns_path(lab.client)}", "nsm0").to_proto()
        ],
    )
    return request


@pytest.fixture
async def remote(lab: Lab, backend: WireGuardBackend) -> AsyncIterator[Remote]:
    fabric = remote_forwarders(lab, backend, recover=True)
    try:
        yield fabric
    finally:
        for side in (fabric.client_side, fabric.endpoint_side):
            if side.recovery is not None:
                await side.recovery.close()


def link_index(ns: str, dev: str) -> str:
    return run("cat", f"/sys/class/net/{dev}/ifindex", netns=ns).stdout.strip()


async def test_local_chain_passes_traffic_refreshes_in_place_and_closes_clean(
    lab: Lab, backend: WireGuardBackend, netns: Callable[[str], str]
) -> None:
    endpoint = netns("lnse")  # on node A, like the client
    far = FarSide(netns_path(endpoint))
    node = Node("fwd-a", "10.99.0.1", "ua", netns_path(lab.node_a))
    fwd = forwarder("fwd-a", node, backend, range(51820, 51830), far)
    before = kernel_state(lab.client, endpoint, lab.node_a)
    conn = await fwd.chain.run_request(client_request(lab))
    try:
        assert is_kernel(conn.mechanism)
        assert KernelMechanism.parse(conn.mechanism).interface == "nsm0"
        assert conn.context.MTU == 1500
        assert "veth" in run("ip", "-d", "link", "show", "nsm0", netns=lab.client).stdout
        assert ping(lab.client, "172.16.0.2") == "ok"
        vwire, index = fwd.vwire(conn), link_index(lab.client, "nsm0")
        again = await fwd.chain.run_request(client_request(lab, conn))
        assert fwd.vwire(again) is vwire and link_index(lab.client, "nsm0") == index
        assert again.id == conn.id and far.requests == 2
        assert ping(lab.client, "172.16.0.2") == "ok"
    finally:
        await fwd.chain.run_close(conn)
    assert far.closes == [conn.id]
    assert kernel_state(lab.client, endpoint, lab.node_a) == before
    assert len(fwd.metadata) == 0


async def test_remote_chains_pass_traffic_refresh_in_place_and_close_clean(
    lab: Lab, remote: Remote
) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    a, b = remote.client_side, remote.endpoint_side
    conn = await a.chain.run_request(client_request(lab))
    try:
        assert is_kernel(conn.mechanism)  # the client gets its KERNEL mechanism back
        assert [s.name for s in conn.path.path_segments] == ["fwd-a", "fwd-b"]
        assert conn.context.MTU == 1440  # 1500 underlay - 60 WireGuard over IPv4
        assert ping(lab.client, "172.16.0.2") == "ok"
        assert ping(lab.endpoint, "172.16.0.1") == "ok"
        assert ping(lab.client, "172.16.0.2", 1412) == "ok"  # 1440 - 28
        assert ping(lab.client, "172.16.0.2", 1413) == "EMSGSIZE"
        assert len(a.live_names()) == 1 and len(b.live_names()) == 1
        vwires = (a.vwire(conn), b.vwire(conn))
        indexes = (link_index(lab.client, "nsm0"), link_index(lab.endpoint, "nse0"))
        metrics = conn.path.path_segments[0].metrics
        assert int(metrics["workload_tx_packets"]) >= 0 and metrics["mtu"] == "1440"
        again = await a.chain.run_request(client_request(lab, conn))
        assert (a.vwire(again), b.vwire(again)) == vwires
        assert (link_index(lab.client, "nsm0"), link_index(lab.endpoint, "nse0")) == indexes
        assert ping(lab.client, "172.16.0.2") == "ok"
        assert remote.far.requests == 2
    finally:
        daemons = set(a.live_names() + b.live_names())
        await a.chain.run_close(conn)
    assert len(daemons) == 2
    assert remote.far.closes == [conn.path.path_segments[1].id]
    assert kernel_state(*names) == before
    assert not await find_leftovers(real_kernel(), [netns_path(n) for n in names])
    assert len(a.metadata) == 0 and len(b.metadata) == 0
    assert a.live_names() == [] and b.live_names() == []
    assert await wait_until(lambda: not wg_processes(daemons))


@pytest.mark.parametrize("case", ["local", "remote"])
async def test_programming_failure_leaves_nothing_and_closes_the_far_side(
    lab: Lab, remote: Remote, backend: WireGuardBackend, case: str
) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    missing = f"/var/run/netns/vwt-{os.getpid()}-gone"  # never created
    if case == "local":
        far = FarSide(missing)
        node = Node("fwd-a", "10.99.0.1", "ua", netns_path(lab.node_a))
        chain = forwarder("fwd-a", node, backend, range(51820, 51830), far).chain
    else:
        far = remote.far
        far.netns = missing
        chain = remote.client_side.chain
    with pytest.raises(NotFound, match="netns"):
        await chain.run_request(client_request(lab))
    assert far.requests == 1 and len(far.closes) == 1
    assert kernel_state(*names) == before
    assert not await find_leftovers(real_kernel(), [netns_path(n) for n in names])
    if case == "remote":
        for side in (remote.client_side, remote.endpoint_side):
            assert len(side.metadata) == 0 and side.live_names() == []
    assert not getattr(backend, "interfaces", list)()
