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
from forwarder.specs import Node
from forwarder.wireguard import generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Xconnect
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.metadata import Metadata
from tests.unit.far_side import FarSide

NODE, CLIENT = "/var/run/netns/node", "/var/run/netns/cli"
_, PEER_PUBLIC = generate_keypair()


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
    far = FarSide(answer, "10.0.0.1/32", "10.0.0.2/32")
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
