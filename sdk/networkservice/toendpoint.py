"""Element ``RouteToEndpoint``: where the chosen endpoint is reached: the endpoint itself when it
registered on this node, else the node manager of the node it registered from (or, for another
domain, the gateway the registry names).

Contract: reads the endpoint the connection names; when it registered here
(:class:`LocalEndpoints`) the target is its own URL, otherwise the URL the domain registry has for
it (the remote node's nsmgr; ``NotFound`` when it is not registered). Sets
``ctx.values[CLIENT_URL]``, ``ctx.values[NEXT_HOP_ID]`` (the endpoint's own identity when local;
the proxying nsmgr's — the registration's last ``path_ids`` entry — when remote) and
``ctx.values[MECHANISM_CLASS]`` (``LOCAL`` or ``REMOTE``) for ``FilterMechanisms``. After a
successful request to another node, ``on_remote(url)`` is told (to follow that node's losses).
Keeps nothing; close passes through (``Connect`` closes where the request went). Place it behind
the endpoint choice: a node manager hands the route to its forwarder (``HandRoute`` behind it), a
gateway dials it itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from api.mechanisms import LOCAL, REMOTE
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.chain import Key
from sdk.networkservice.client import CLIENT_URL
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.discover import find_endpoint
from sdk.networkservice.token import NEXT_HOP_ID
from sdk.registry.core import RegistryChain
from sdk.registry.pathids import last_id

#: ``LOCAL`` or ``REMOTE``: the class of mechanism the next hop needs.
MECHANISM_CLASS: Key[str] = Key("toendpoint.mechanism_class")


class LocalEndpoints(Protocol):
    """The endpoints registered on this node."""

    def url(self, name: str) -> str | None:
        """Where endpoint ``name`` serves, or None when it did not register here."""

    def spiffe_id(self, name: str) -> str:
        """The identity endpoint ``name`` registered with ('' without one)."""


class RouteToEndpoint(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self,
        local: LocalEndpoints,
        registry: RegistryChain[NetworkServiceEndpoint],
        on_remote: Callable[[str], None] | None = None,
    ) -> None:
        self.local = local
        self.registry = registry
        self.on_remote = on_remote

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        name = request.connection.network_service_endpoint_name
        local_url = self.local.url(name)
        if local_url:
            target, identity = local_url, self.local.spiffe_id(name)
        else:
            record = await find_endpoint(self.registry, name)
            target, identity = record.url, last_id(record)
        ctx = next.ctx
        ctx.values[CLIENT_URL] = target
        ctx.values[NEXT_HOP_ID] = identity
        ctx.values[MECHANISM_CLASS] = LOCAL if local_url else REMOTE
        reply = await next.request(request)
        if not local_url and self.on_remote is not None:
            self.on_remote(target)
        return reply
