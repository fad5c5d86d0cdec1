"""What the forwarder still refuses in the endpoint's answer, now that the endpoint's IPAM drops
client-brought addresses and routes before they reach it (the NetworkService fuzzing found these
two through the client's side; an endpoint that answers them is refused the same way)."""

from __future__ import annotations

import pytest

from forwarder.kernel import FakeKernel
from forwarder.vwire import Attachment, LocalVWireSpec, RouteSpec, program_local
from sdk.errors import InvalidArgument

C, E = "/var/run/netns/client", "/var/run/netns/endpoint"


@pytest.mark.parametrize(
    ("client", "field"),
    [
        (Attachment(C, "nsm0", ("fe80::1%eth0/64",)), "client.addresses[0]"),
        (Attachment(C, "nsm0", ("10.0.0.2/32",), (RouteSpec("10.9.0.0/16", "192.0.2.1"),)),
         "client.routes[0].next_hop"),
    ],
    ids=["ipv6-zone", "unreachable-next-hop"],
)
async def test_an_unprogrammable_answer_is_refused_before_anything_exists(
    client: Attachment, field: str
) -> None:
    kernel = FakeKernel()
    kernel.add_netns(C)
    kernel.add_netns(E)
    before = kernel.snapshot()
    spec = LocalVWireSpec("conn-1", client, Attachment(E, "nse0", ("10.0.0.1/32",)))
    with pytest.raises(InvalidArgument) as failure:
        await program_local(kernel, spec)
    assert failure.value.field == field
    assert kernel.snapshot() == before
