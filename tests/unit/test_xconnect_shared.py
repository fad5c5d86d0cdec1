"""How two forwarders' ``Xconnect`` agree on a shared device, on the fake kernel: only when both
share and the client side can dial the endpoint's node, with the answer naming the endpoint
side's device (port, node key, space); otherwise a device per vWire, as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from api.mechanisms.kernel import KernelMechanism
from api.mechanisms.wireguard import NAT_MASQUERADE, Reach, WireguardMechanism
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder import xconnect
from forwarder.kernel import FakeKernel
from forwarder.ports import PortPool
from forwarder.shared import SharedDevices
from forwarder.specs import Node
from forwarder.wireguard import generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Xconnect
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.metadata import Metadata
from tests.unit.far_side import FarSide
from tests.unit.test_xconnect_reach import ToOtherNode

CLIENT_NS, ENDPOINT_NS = "/var/run/netns/cli", "/var/run/netns/nse"
N1, N2 = "/var/run/netns/n1", "/var/run/netns/n2"


class Answers(NetworkServiceElement):
    """Records the endpoint side's answer on its way back to the client side."""

    def __init__(self) -> None:
        self.answers: list[WireguardMechanism] = []

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.offer = WireguardMechanism.parse(request.mechanism_preferences[-1])
        reply = await next.request(request)
        self.answers.append(WireguardMechanism.parse(reply.mechanism))
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        await next.close(conn)


@dataclass
class Fabric:
    kernel: FakeKernel
    backend: FakeWireGuard
    chain: NetworkServiceChain
    answers: Answers
    far: FarSide
    ports: tuple[PortPool, PortPool]
    shared: tuple[SharedDevices | None, SharedDevices | None]


@pytest.fixture
async def make() -> AsyncIterator[object]:
    made: list[SharedDevices] = []

    async def build(client_shares: bool, endpoint_shares: bool,
                    endpoint_nat: str = "none") -> Fabric:
        kernel = FakeKernel()
        for ns in (CLIENT_NS, ENDPOINT_NS, N1, N2, f"{CLIENT_NS}2", f"{CLIENT_NS}3",
                   f"{ENDPOINT_NS}3"):
            kernel.add_netns(ns)
        for ns in (N1, N2):
            kernel.add_link(ns, "eth0", "veth", up=True, mtu=1500)
        backend = FakeWireGuard(kernel)
        ports = (PortPool(range(51820, 51830)), PortPool(range(51820, 51830)))
        shared: list[SharedDevices | None] = []
        for i, (shares, ns) in enumerate(((client_shares, N1), (endpoint_shares, N2))):
            devices = None
            if shares:
                devices = SharedDevices(kernel, backend, ports[i], f"fwd-n{i + 1}", ns, linger=0)
                await devices.start()
                made.append(devices)
            shared.append(devices)
        answers = Answers()
        site = "b" if endpoint_nat == NAT_MASQUERADE else ""
        endpoint = Xconnect(kernel, backend, Node("n2", "192.0.2.2", "eth0", N2,
                                                  reach=Reach(site=site, nat=endpoint_nat)),
                            ports[1], shared=shared[1])
        far = FarSide(KernelMechanism(ENDPOINT_NS, "nse0").to_proto(), "10.0.0.1/32",
                      "10.0.0.2/32")
        endpoint_side = NetworkServiceChain([Metadata(), endpoint, far])
        client = Xconnect(kernel, backend, Node("n1", "192.0.2.1", "eth0", N1), ports[0],
                          shared=shared[0])
        chain = NetworkServiceChain([Metadata(), client, answers, ToOtherNode(endpoint_side)])
        return Fabric(kernel, backend, chain, answers, far, ports, (shared[0], shared[1]))

    yield build
    for devices in made:
        await devices.stop()


def request(conn_id: str = "c1") -> NetworkServiceRequest:
    return NetworkServiceRequest(connection=Connection(id=conn_id), mechanism_preferences=[
        KernelMechanism(CLIENT_NS, "nsm0").to_proto()])


async def test_both_sharing_use_the_endpoint_sides_device(make: object) -> None:
    f: Fabric = await make(True, True)  # type: ignore[operator]
    reply = await f.chain.run_request(request())
    client, endpoint = f.shared
    assert client is not None and endpoint is not None
    assert f.answers.offer.src_shared_key == client.public_key
    (answer,) = f.answers.answers
    (device,) = endpoint.devices()
    assert (answer.shared_space, answer.dst_public_key, answer.dst_port) == (
        0, endpoint.public_key, device.port)
    assert f.ports[1]._by_owner == {f"shared:{device.wg_name}": device.port}  # no port per vWire
    assert list(f.ports[0]._by_owner) == [f"shared:{client.devices()[0].wg_name}"]
    assert (await f.kernel.get_link(CLIENT_NS, "nsm0")).kind == "veth"
    assert (await f.kernel.get_link(ENDPOINT_NS, "nse0")).kind == "veth"
    # the client side dials the endpoint side's device; the endpoint side learns it
    (client_device,) = client.devices()
    (peer,) = f.backend.peers[client_device.wg_name].values()
    assert (peer.public_key, peer.endpoint, peer.keepalive) == (
        endpoint.public_key, ("192.0.2.2", device.port), 25)
    (back,) = f.backend.peers[device.wg_name].values()
    assert (back.public_key, back.endpoint) == (client.public_key, None)
    assert reply.path.path_segments[0].metrics["wireguard_device"] == "shared"
    # a second client of the same endpoint shares both devices
    f.far.client = "10.0.0.3/32"  # the endpoint stays 10.0.0.2
    f.far.mechanism = KernelMechanism(ENDPOINT_NS, "nse1").to_proto()
    second = await f.chain.run_request(NetworkServiceRequest(
        connection=Connection(id="c2"), mechanism_preferences=[
            KernelMechanism(f"{CLIENT_NS}2", "nsm0").to_proto()]))
    assert len(client.devices()) == len(endpoint.devices()) == 1
    assert f.answers.answers[-1].shared_space == 0
    # one with the same addresses as the first needs a second device pair, on both sides
    f.far.client = "10.0.0.1/32"
    f.far.mechanism = KernelMechanism(f"{ENDPOINT_NS}3", "nse0").to_proto()  # another endpoint
    third = await f.chain.run_request(NetworkServiceRequest(
        connection=Connection(id="c3"), mechanism_preferences=[
            KernelMechanism(f"{CLIENT_NS}3", "nsm0").to_proto()]))
    assert f.answers.answers[-1].shared_space == 1
    assert len(client.devices()) == len(endpoint.devices()) == 2
    for conn in (reply, second, third):
        await f.chain.run_close(conn)
    assert client.devices() == endpoint.devices() == []
    assert f.ports[0]._by_owner == f.ports[1]._by_owner == {}


async def test_only_the_offer_needs_a_vwire_key_pair_when_both_share(
    make: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client side offers a key of the vWire's own (the endpoint side may not share); an
    endpoint side that answers with its shared device makes none."""
    made: list[tuple[str, str]] = []

    def counted() -> tuple[str, str]:
        made.append(generate_keypair())
        return made[-1]

    monkeypatch.setattr(xconnect, "generate_keypair", counted)
    f: Fabric = await make(True, True)  # type: ignore[operator]
    await f.chain.run_request(request())
    assert [public for _, public in made] == [f.answers.offer.src_public_key]


@pytest.mark.parametrize(("client_shares", "endpoint_shares", "nat"), [
    (True, False, "none"),  # an endpoint side that does not share answers per vWire
    (False, True, "none"),  # nothing offered
    (True, True, NAT_MASQUERADE),  # the client side could not dial the endpoint's node
], ids=["endpoint-does-not-share", "client-does-not-offer", "client-cannot-dial"])
async def test_otherwise_a_device_per_vwire(
    make: object, client_shares: bool, endpoint_shares: bool, nat: str
) -> None:
    f: Fabric = await make(client_shares, endpoint_shares, nat)  # type: ignore[operator]
    reply = await f.chain.run_request(request())
    (answer,) = f.answers.answers
    assert answer.shared_space is None
    assert (await f.kernel.get_link(CLIENT_NS, "nsm0")).kind == "tun"
    assert reply.path.path_segments[0].metrics["wireguard_device"] == "per-vwire"
    assert all(devices is None or devices.devices() == [] for devices in f.shared)


@pytest.mark.parametrize(("offered", "port", "space", "field"), [
    (False, 51820, 0, "mechanism.parameters[vwire_shared_space]"),
    (True, 0, 0, "mechanism.parameters[dst_port]"),
    (True, 51820, 64, "mechanism.parameters[vwire_shared_space]"),
], ids=["not-offered", "no-port", "space-beyond-the-bound"])
async def test_an_unusable_shared_answer_is_refused_and_undone(
    offered: bool, port: int, space: int, field: str
) -> None:
    kernel = FakeKernel()
    for ns in (CLIENT_NS, N1):
        kernel.add_netns(ns)
    kernel.add_link(N1, "eth0", "veth", up=True)
    ports = PortPool(range(51820, 51822))
    devices = SharedDevices(kernel, FakeWireGuard(kernel), ports, "fwd-n1", N1, linger=0)
    await devices.start()
    answer = WireguardMechanism(dst_ip="192.0.2.2", dst_port=port,
                                dst_public_key=generate_keypair()[1], shared_space=space)
    far = FarSide(answer.to_proto(), "10.0.0.1/32", "10.0.0.2/32")
    chain = NetworkServiceChain([
        Metadata(), Xconnect(kernel, FakeWireGuard(kernel), Node("n1", "192.0.2.1", "eth0", N1),
                             ports, shared=devices if offered else None), far])
    before = kernel.snapshot()
    try:
        with pytest.raises(InvalidArgument) as failure:
            await chain.run_request(request())
        assert failure.value.field == field
        assert far.closes == 1 and ports._by_owner == {} and kernel.snapshot() == before
        assert devices.devices() == []
    finally:
        await devices.stop()
