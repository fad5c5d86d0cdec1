"""Tunnels prepared while the request is downstream, on the fake kernel: which preparation is
taken over, which is removed, and what the client side remembers per network service.
(Real namespaces and wireguard-go: tests/privileged/test_prepare_ahead.py.)"""

from __future__ import annotations

import asyncio

import pytest

from api.mechanisms.kernel import KernelMechanism
from api.mechanisms.wireguard import Reach, WireguardMechanism
from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import FakeKernel
from forwarder.ports import PortPool
from forwarder.specs import Node
from forwarder.wireguard import generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Xconnect
from sdk.errors import DataplaneError
from sdk.networkservice.core import NetworkServiceChain, NSCursor
from sdk.networkservice.metadata import Metadata
from tests.unit.far_side import FarSide

NODE, CLIENT, ENDPOINT = "/var/run/netns/node", "/var/run/netns/cli", "/var/run/netns/nse"
_, PEER_PUBLIC = generate_keypair()


class CountingWireGuard(FakeWireGuard):
    """Counts creates (``created`` is set by the first); ``fail_creates`` makes that many
    creates fail first."""

    def __init__(self, kernel: FakeKernel) -> None:
        super().__init__(kernel)
        self.creates = 0
        self.fail_creates = 0
        self.created = asyncio.Event()

    async def create(self, ifname: str, underlay_netns: str | None, private_key: str,
                     listen_port: int, mtu: int | None = None, netns: str | None = None,
                     alias: str | None = None) -> int:
        self.creates += 1
        self.created.set()
        if self.fail_creates:
            self.fail_creates -= 1
            raise DataplaneError("injected: no daemon")
        return await super().create(ifname, underlay_netns, private_key, listen_port, mtu, netns,
                                    alias)


class WaitingFarSide(FarSide):
    """Answers only once ``backend`` was asked for an interface (a preparation is under way)."""

    def __init__(self, mechanism: Mechanism, backend: CountingWireGuard) -> None:
        super().__init__(mechanism, "10.0.0.1/32", "10.0.0.2/32")
        self.backend = backend

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if self.backend.creates == 0:  # the first request of a test: a preparation must run
            await asyncio.wait_for(self.backend.created.wait(), 5)
        return await super().request(request, next)


def wireguard_answer(mtu: int) -> Mechanism:
    return WireguardMechanism(dst_ip="192.0.2.2", dst_port=51900, dst_public_key=PEER_PUBLIC,
                              mtu=mtu).to_proto()


def setup(answer: Mechanism) -> tuple[FakeKernel, CountingWireGuard, NetworkServiceChain,
                                      FarSide, PortPool]:
    kernel = FakeKernel()
    for ns in (NODE, CLIENT, ENDPOINT):
        kernel.add_netns(ns)
    kernel.add_link(NODE, "eth0", "veth", up=True, mtu=1500)
    backend = CountingWireGuard(kernel)
    ports = PortPool(range(51820, 51822))
    far = WaitingFarSide(answer, backend)
    node = Node("fwd", "192.0.2.1", "eth0", NODE, reach=Reach(underlay_mtu=1500))
    chain = NetworkServiceChain([Metadata(), Xconnect(kernel, backend, node, ports), far])
    return kernel, backend, chain, far, ports


async def names(kernel: FakeKernel, ns: str) -> list[str]:
    return [link.name for link in await kernel.list_links(ns) if link.name != "lo"]


def request(cid: str) -> NetworkServiceRequest:
    return NetworkServiceRequest(
        connection=Connection(id=cid, network_service="svc"),
        mechanism_preferences=[KernelMechanism(CLIENT, "nsm0").to_proto()],
    )


async def test_a_fitting_preparation_becomes_the_vwire() -> None:
    kernel, backend, chain, _, ports = setup(wireguard_answer(1440))
    before = kernel.snapshot()
    conn = await chain.run_request(request("c1"))
    assert conn.context.MTU == 1440
    assert backend.creates == 1  # prepared once, taken over, not made again
    assert await names(kernel, CLIENT) == ["nsm0"]
    await chain.run_close(conn)
    assert kernel.snapshot() == before and ports._by_owner == {}


async def test_another_mtu_removes_the_preparation_and_programs_anew() -> None:
    kernel, backend, chain, _, ports = setup(wireguard_answer(1300))
    before = kernel.snapshot()
    conn = await chain.run_request(request("c1"))
    assert conn.context.MTU == 1300 and backend.creates == 2
    assert await names(kernel, CLIENT) == ["nsm0"]
    assert len(backend.where) == 1  # the prepared one is gone
    await chain.run_close(conn)
    # the service's MTU is remembered: the next preparation fits
    again = await chain.run_request(request("c2"))
    assert again.context.MTU == 1300 and backend.creates == 3
    await chain.run_close(again)
    assert kernel.snapshot() == before and ports._by_owner == {}


async def test_a_failed_preparation_is_made_again_after_the_answer() -> None:
    kernel, backend, chain, _, ports = setup(wireguard_answer(1440))
    before = kernel.snapshot()
    backend.fail_creates = 1
    conn = await chain.run_request(request("c1"))
    assert conn.context.MTU == 1440 and backend.creates == 2
    await chain.run_close(conn)
    assert kernel.snapshot() == before and ports._by_owner == {}


async def test_a_local_answer_removes_it_and_the_service_is_not_prepared_for_again() -> None:
    kernel, backend, chain, _, ports = setup(KernelMechanism(ENDPOINT, "nse0").to_proto())
    before = kernel.snapshot()
    conn = await chain.run_request(request("c1"))
    assert backend.creates == 1 and backend.where == {}  # prepared, then removed
    await chain.run_close(conn)
    conn = await chain.run_request(request("c2"))
    assert backend.creates == 1  # the endpoint of "svc" was on this node: nothing prepared
    await chain.run_close(conn)
    assert kernel.snapshot() == before and ports._by_owner == {}


async def test_off_prepares_nothing() -> None:
    kernel = FakeKernel()
    for ns in (NODE, CLIENT):
        kernel.add_netns(ns)
    kernel.add_link(NODE, "eth0", "veth", up=True, mtu=1500)
    backend = CountingWireGuard(kernel)
    backend.fail_creates = 1  # a preparation would take this failure; programming would not
    node = Node("fwd", "192.0.2.1", "eth0", NODE, reach=Reach(underlay_mtu=1500))
    xconnect = Xconnect(kernel, backend, node, PortPool(range(51820, 51822)),
                        prepare_ahead=False)
    chain = NetworkServiceChain([Metadata(), xconnect, FarSide(wireguard_answer(1440))])
    with pytest.raises(DataplaneError, match="injected"):
        await chain.run_request(request("c1"))
    assert backend.creates == 1
