"""Element ``Discover``: the candidate endpoints of the requested network service.

Contract: on a request that names no endpoint, asks the domain registry for the network service
(its ``matches``; an unregistered service has none) and, at the same time, for the endpoints that
provide it (one round trip's wait instead of two; a failure of either cancels the other),
narrows them with the matches and the client's labels (:mod:`sdk.select.match`), and leaves the
result in ``ctx.values[CANDIDATES]`` for the selection behind it. Raises :class:`NoEndpoint`
naming the service when nothing provides it or nothing matches the labels. A request that names
an endpoint passes unchanged. Place it in front of ``SelectEndpoint``, behind ``Retry`` (every
attempt looks again). Keeps nothing; close passes through.

:func:`find_endpoint` is the one lookup of an endpoint's registration by name.
"""

from __future__ import annotations

import asyncio

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.aio import cancel_all
from sdk.chain import Key
from sdk.errors import InvalidArgument, NotFound
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.registry.core import Query, RegistryChain, first_record
from sdk.select.match import WeightedCandidate, candidates

#: The endpoints that may serve this request, in registry order.
CANDIDATES: Key[list[WeightedCandidate]] = Key("discover.candidates")


class NoEndpoint(NotFound):
    """No endpoint is left to choose for the request (none provides it, matches, or is
    available): another attempt would find none either."""


async def find_endpoint(
    registry: RegistryChain[NetworkServiceEndpoint], name: str
) -> NetworkServiceEndpoint:
    """The registration of endpoint ``name``; NotFound when it is not registered."""
    if not name:  # an empty name is a template that matches every record
        raise InvalidArgument(
            "connection.network_service_endpoint_name", "must name the endpoint to look up"
        )
    record = await first_record(registry.find(Query(NetworkServiceEndpoint(name=name))))
    if record is not None:
        return record
    raise NotFound(f"network service endpoint {name!r} is not registered (any more)")


class Discover(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self,
        services: RegistryChain[NetworkService],
        endpoints: RegistryChain[NetworkServiceEndpoint],
    ) -> None:
        self.services = services
        self.endpoints = endpoints

    async def _service(self, name: str) -> NetworkService:
        record = await first_record(self.services.find(Query(NetworkService(name=name))))
        # an unregistered service: no matches, any endpoint
        return record if record is not None else NetworkService(name=name)

    async def _providers(self, name: str) -> list[NetworkServiceEndpoint]:
        query = Query(NetworkServiceEndpoint(network_service_names=[name]))
        return [event.record async for event in self.endpoints.find(query)]

    async def _lookups(self, name: str) -> tuple[list[NetworkServiceEndpoint], NetworkService]:
        """Providers and service record, both asked at once; the first failure is raised
        as it is, after the other lookup was cancelled."""
        providing = asyncio.ensure_future(self._providers(name))
        service = asyncio.ensure_future(self._service(name))
        try:
            return await asyncio.gather(providing, service)
        except BaseException:
            await cancel_all((providing, service))
            raise

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        if conn.network_service_endpoint_name:
            return await next.request(request)
        name = conn.network_service
        providers, service = await self._lookups(name)
        if not providers:
            raise NoEndpoint(f"network service {name!r} not found: no endpoint provides it")
        found = candidates(service, providers, dict(conn.labels))
        if not found:
            raise NoEndpoint(
                f"network service {name!r}: no endpoint matches the client's labels "
                f"{dict(conn.labels)}"
            )
        next.ctx.values[CANDIDATES] = found
        return await next.request(request)
