"""A node without a forwarder is the node's fault: ``Retry`` neither retries it nor counts it
against the endpoint (the old Route picked the forwarder outside its retry loop; as elements,
the forwarder choice sits behind ``Retry``, which must tell the two apart)."""

from __future__ import annotations

import pytest

from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import NotFound
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.forwarder import NoForwarder, SelectForwarder
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.retry import Retry
from sdk.select.breaker import CircuitBreaker
from sdk.testing import Count


class NoForwarders:
    def url(self, name: str) -> str | None:
        return None

    def spiffe_id(self, name: str) -> str:
        return ""

    def names(self) -> set[str]:
        return set()

    def pick(self) -> tuple[str, str]:
        raise NotFound("no forwarder is registered on this node: is the forwarder running?")


async def test_no_forwarder_is_not_the_endpoints_fault() -> None:
    breaker, count = CircuitBreaker(), Count()
    chain = NetworkServiceChain([Metadata(), Retry(breaker, attempts=3),
                                 SelectForwarder(NoForwarders()), count])
    request = NetworkServiceRequest()
    request.connection.id = "c1"
    request.connection.network_service_endpoint_name = "nse-a"
    with pytest.raises(NoForwarder, match="is the forwarder running"):
        await chain.run_request(request)
    assert count.requests == 0
    for _ in range(10):  # a failure counted against it would eject it after a few
        assert breaker.is_available("nse-a")
    assert breaker.state("nse-a").value == "closed"
