"""Element ``ExcludePrefixes``: a client's connections do not get each other's addresses.

Contract (client side): one instance is shared by every connection of one workload (one network
namespace). On request, the prefixes the workload's *other* connections use — their addresses
on both sides and the prefixes of their routes — are added to the request's
``ip_context.excluded_prefixes`` (keeping what the caller put there), so an endpoint's IPAM
assigns none of them, even when two endpoints hand out the same pool. After a successful
request it remembers what the connection uses; a close forgets it (whether or not the close
succeeded downstream). A failed request changes nothing. Place it behind ``ClientBegin``, in
front of ``UpdatePath``.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor


def used_prefixes(conn: Connection) -> set[str]:
    """The addresses and route prefixes of both sides of ``conn``."""
    ip = conn.context.ip_context
    routes = [*ip.src_routes, *ip.dst_routes]
    return {*ip.src_ip_addrs, *ip.dst_ip_addrs, *(route.prefix for route in routes)}


class ExcludePrefixes(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}

    def others(self, conn_id: str) -> list[str]:
        """The prefixes the workload's connections other than ``conn_id`` use, sorted."""
        return sorted(set().union(*(p for i, p in self._used.items() if i != conn_id)))

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn_id = request.connection.id
        excluded = request.connection.context.ip_context.excluded_prefixes
        present = set(excluded)
        excluded.extend(p for p in self.others(conn_id) if p not in present)
        reply = await next.request(request)
        self._used[conn_id] = used_prefixes(reply)
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        try:
            await next.close(conn)
        finally:
            self._used.pop(conn.id, None)
