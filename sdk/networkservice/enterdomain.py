"""Element ``EnterDomain``: a request for ``name@own`` continues in its own domain as ``name``.

Contract: on request, the connection's network service and endpoint name lose a suffix naming
this hop's domain ``own`` (``db@cloud-b`` → ``db`` in domain cloud-b), so everything behind it
— registry lookups, authorization, the endpoint's own checks — sees local names; the reply gets
the names back as the caller sent them (a refresh from the caller matches). A close passes on
with the suffix removed the same way. Names without ``@`` or of another domain pass unchanged.
Path tokens stay valid: they bind a service name without its domain
(:func:`sdk.networkservice.token.request_binding`). Place it where requests enter the domain
(a gateway's inbound branch; a node manager, for clients naming their own domain), in front of
every element that reads the names. Keeps nothing.

``also`` names more domains to treat as this hop's own (a container: anything with ``in``): a
gateway's endpoints published in floating domains (``name@F`` is served here as ``name``), or
:data:`ANY_DOMAIN` for requests another gateway sent here (it sends a gateway only what that
gateway's domain serves).
"""

from __future__ import annotations

from collections.abc import Callable, Container

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.domains import split
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class _AnyDomain:
    """Every domain."""

    def __contains__(self, domain: object) -> bool:
        return True


#: ``also`` for a hop that takes every domain's names as its own.
ANY_DOMAIN: Container[str] = _AnyDomain()


class EnterDomain(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, own: str, also: Callable[[], Container[str]] = frozenset) -> None:
        self.own = own
        self.also = also

    def _local(self, name: str) -> str:
        base, domain = split(name)
        return base if domain is not None and (domain == self.own or domain in self.also()) \
            else name

    def _localize(self, conn: Connection) -> tuple[str, str]:
        sent = conn.network_service, conn.network_service_endpoint_name
        conn.network_service = self._local(conn.network_service)
        conn.network_service_endpoint_name = self._local(conn.network_service_endpoint_name)
        return sent

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        service, endpoint = self._localize(request.connection)
        reply = await next.request(request)
        if reply.network_service == self._local(service):
            reply.network_service = service
        if endpoint and reply.network_service_endpoint_name == self._local(endpoint):
            reply.network_service_endpoint_name = endpoint
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._localize(conn)
        await next.close(conn)
