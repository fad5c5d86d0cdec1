"""external.accept.AcceptIntoRouter: conforms to the element contract (sdk.testing), takes each
connection into the router namespace with its own interface, refuses anything but KERNEL."""

from __future__ import annotations

import pytest

from api.mechanisms.kernel import KernelMechanism
from api.proto.connection_pb2 import Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from external.accept import AcceptIntoRouter
from sdk.chain import CallContext
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceChain
from sdk.testing import Respond, conformance_problems

NETNS = "/var/run/netns/vwx-srv"


def _kernel(request: NetworkServiceRequest) -> None:
    request.mechanism_preferences.append(KernelMechanism("/proc/1/ns/net", "").to_proto())


async def test_conforms() -> None:
    assert await conformance_problems(lambda: AcceptIntoRouter(NETNS), prepare=_kernel) == []


async def test_each_connection_gets_its_own_interface_in_the_router() -> None:
    chain = NetworkServiceChain([AcceptIntoRouter(NETNS), Respond()])
    names = set()
    for conn_id in ("a", "b"):
        request = NetworkServiceRequest()
        request.connection.id = conn_id
        _kernel(request)
        conn = await chain.run_request(request, CallContext.with_timeout(5))
        mechanism = KernelMechanism.parse(conn.mechanism)
        assert mechanism.netns_url == NETNS
        names.add(mechanism.interface)
    assert len(names) == 2 and all(name.startswith("nsm") for name in names)
    request = NetworkServiceRequest()
    request.mechanism_preferences.append(Mechanism(cls="REMOTE", type="WIREGUARD"))
    with pytest.raises(InvalidArgument) as caught:
        await chain.run_request(request, CallContext.with_timeout(5))
    assert caught.value.field == "mechanism_preferences"
