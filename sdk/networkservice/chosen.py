"""Element ``RequireChosenEndpoint``: a request relayed from another node names its endpoint.

Contract: the endpoint of a connection is chosen once, by the client's own node manager; a
request that arrives from another node without an endpoint name is refused with
``InvalidArgument``. Others pass unchanged; close passes through. Place it in the branch of a
node manager that serves requests from other nodes.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class RequireChosenEndpoint(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if not request.connection.network_service_endpoint_name:
            raise InvalidArgument(
                "connection.network_service_endpoint_name",
                "a request from another node must name the endpoint chosen for it",
            )
        return await next.request(request)
