"""Element ``Ipam``: the endpoint side fills the connection's addresses and routes.

Contract: on request, :meth:`sdk.ipam.PointToPointIpam.fill_ip_context` gives the connection a
client and an endpoint address per configured prefix (the same ones again on a refresh),
honouring the request's ``excluded_prefixes``, and routes so each side reaches the other; extra
``routes`` (prefixes behind the endpoint) are added to the client's routes, and the DNS configs to
the DNS context. If the rest of the chain fails on a first request, the addresses are released
again; a close releases them after the rest of the chain closed. Place it on endpoints, after
``Metadata``.

Both sides of the answer are this endpoint's alone: ``src_ip_addrs`` are exactly the client
addresses this IPAM assigned and ``src_routes`` exactly the host routes to the endpoint's
addresses plus the configured ``routes``; ``dst_*`` likewise (see ``fill_ip_context``). Whatever
else a request brings — its own addresses, which the forwarders would otherwise install as
routes and WireGuard allowed IPs into the endpoint's namespace (a client claiming another's
address, or a service address, would pull that traffic into its tunnel), or routes of its own —
is dropped, never installed.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.proto.connection_pb2 import Connection
from api.proto.connectioncontext_pb2 import DNSConfig
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.ipam import PointToPointIpam
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class Ipam(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self,
        ipam: PointToPointIpam,
        routes: Sequence[str] = (),
        dns: Sequence[DNSConfig] = (),
    ) -> None:
        self.ipam = ipam
        self.routes = tuple(routes)
        self.dns = tuple(dns)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        first = self.ipam.lookup(conn.id) is None
        ip = conn.context.ip_context
        allocation = self.ipam.fill_ip_context(ip, conn.id)
        # The client's side too is ours alone: only what this IPAM assigned, and our routes.
        del ip.src_ip_addrs[:]
        ip.src_ip_addrs.extend(allocation.src_addrs)
        del ip.src_routes[:]
        for prefix in dict.fromkeys([*allocation.dst_addrs, *self.routes]):
            ip.src_routes.add(prefix=prefix)
        if self.dns and not conn.context.dns_context.configs:
            conn.context.dns_context.configs.extend(self.dns)
        try:
            return await next.request(request)
        except BaseException:
            if first:
                self.ipam.release(conn.id)
            raise

    async def close(self, conn: Connection, next: NSCursor) -> None:
        try:
            await next.close(conn)
        finally:
            self.ipam.release(conn.id)
