"""Element ``CheckNamedEndpoint``: an endpoint the client names must provide the service it asks.

Contract: on a request naming an endpoint other than the one this hop built the connection to
(``metadata[CHOSEN]``), looks the endpoint up in the registry and refuses the request with
``NotFound`` when it is not registered and ``InvalidArgument`` when it does not provide the
requested network service — else authorizing that service would admit the client to another
one. Other requests pass unchanged; close passes through. Place it behind the authorization and
``Reselect``, where this hop chooses endpoints.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.discover import find_endpoint
from sdk.networkservice.select import CHOSEN
from sdk.registry.core import RegistryChain


class CheckNamedEndpoint(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, endpoints: RegistryChain[NetworkServiceEndpoint]) -> None:
        self.endpoints = endpoints

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        name, service = conn.network_service_endpoint_name, conn.network_service
        if name and next.ctx.metadata.get(CHOSEN) != name:
            record = await find_endpoint(self.endpoints, name)
            if service not in record.network_service_names:
                provided = ", ".join(record.network_service_names) or "nothing"
                raise InvalidArgument(
                    "connection.network_service_endpoint_name",
                    f"endpoint {name!r} does not provide network service {service!r} (it "
                    f"provides {provided}): name an endpoint of that service, or leave the "
                    "field empty for nsmgr to choose one",
                )
        return await next.request(request)
