"""Element ``RefuseLoop``: a relay does not send a request back to itself.

Contract: on request, when the next hop chosen in front (``ctx.values[CLIENT_URL]``, set by
``RouteToEndpoint``) is one of this hop's own addresses (``own()``), the request is refused with
``FailedPrecondition`` naming the endpoint — e.g. a gateway that published ``name@F`` in a
floating domain and restarted since, so F points requests back at it while it no longer knows
the name: registering the endpoint again fixes it. Without the check the request would circle
until its deadline. Others pass unchanged; close passes through. Place it right behind the
element that chooses the next hop. Keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import FailedPrecondition
from sdk.networkservice.client import CLIENT_URL
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class RefuseLoop(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, own: Callable[[], Collection[str]]) -> None:
        self.own = own

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        target = next.ctx.values.get(CLIENT_URL)
        if target and target in self.own():
            name = request.connection.network_service_endpoint_name
            raise FailedPrecondition(
                f"endpoint {name!r} is registered at this hop's own address {target} but is not "
                "served here (published in a floating domain before a restart?): register it "
                "again"
            )
        return await next.request(request)
