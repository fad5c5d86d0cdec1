"""Xconnect when the far side answers with something it cannot use (found by the NetworkService
fuzz tests): the request fails with InvalidArgument naming the mechanism, the rest of the path is
closed again, the tunnel port goes back to the pool and the kernel is untouched."""

from __future__ import annotations

import pytest

from api.mechanisms.kernel import KernelMechanism
from api.mechanisms.wireguard import WireguardMechanism
from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import FakeKernel
from forwarder.ports import PortPool
from forwarder.wireguard import generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Node, Xconnect
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.metadata import Metadata

NODE, CLIENT = "/var/run/netns/node", "/var/run/netns/cli"
_, PEER_PUBLIC = generate_keypair()


class Answer(NetworkServiceElement):
    """Answers every request with ``mechanism``; counts closes."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self.closes = 0

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = Connection()
        conn.CopyFrom(request.connection)
        conn.mechanism.CopyFrom(self.mechanism)
        conn.context.ip_context.src_ip_addrs.append("10.0.0.1/32")
        conn.context.ip_context.dst_ip_addrs.append("10.0.0.2/32")
        conn.path.path_segments.add(name="fwd", id=conn.id)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.closes += 1


def garbled_wireguard() -> Mechanism:
    answer = WireguardMechanism(dst_ip="192.0.2.2", dst_public_key=PEER_PUBLIC).to_proto()
    answer.parameters["dst_port"] = "²"  # isdigit() is true, int() refuses it
    return answer


@pytest.mark.parametrize(
    ("offer", "answer", "field"),
    [
        (KernelMechanism(CLIENT, "nsm0").to_proto(), Mechanism(cls="X", type="VXLAN"),
         "mechanism"),
        (KernelMechanism(CLIENT, "nsm0").to_proto(), garbled_wireguard(),
         "mechanism.parameters[dst_port]"),
        (WireguardMechanism(src_ip="192.0.2.2", src_port=51820,
                            src_public_key=PEER_PUBLIC).to_proto(),
         Mechanism(cls="X", type="VXLAN"), "mechanism"),
    ],
    ids=["client-side-unknown-type", "client-side-bad-port", "endpoint-side-not-kernel"],
)
async def test_an_unusable_answer_is_refused_and_undone(
    offer: Mechanism, answer: Mechanism, field: str
) -> None:
    kernel = FakeKernel()
    for ns in (NODE, CLIENT):
        kernel.add_netns(ns)
    kernel.add_link(NODE, "eth0", "veth", up=True)
    ports = PortPool(range(51820, 51822))
    far = Answer(answer)
    chain = NetworkServiceChain([
        Metadata(),
        Xconnect(kernel, FakeWireGuard(kernel), Node("fwd", "192.0.2.1", "eth0", NODE), ports),
        far,
    ])
    before = kernel.snapshot()
    for attempt in range(3):  # more attempts than ports: a leaked port would exhaust the pool
        request = NetworkServiceRequest(connection=Connection(id=f"c{attempt}"),
                                        mechanism_preferences=[offer])
        with pytest.raises(InvalidArgument) as failure:
            await chain.run_request(request)
        assert failure.value.field == field
    assert far.closes == 3
    assert ports._by_owner == {}
    assert kernel.snapshot() == before
