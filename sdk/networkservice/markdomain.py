"""Element ``MarkDomain``: a gateway's path segment says which domain it stands in.

Contract: on request, this hop's segment (at ``path.index``: place it behind ``UpdatePath``)
gets ``metrics["domain"] = domain``, so whoever reads the path (``nsmctl status``, the
dashboard) sees where it crosses from one domain into another: the hops up to a gateway are in
that gateway's domain, the hops after the next gateway in the next one. Close passes through.
Keeps nothing.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor

#: The path segment metric naming a gateway's domain.
DOMAIN_METRIC = "domain"


class MarkDomain(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        path = request.connection.path
        if path.index < len(path.path_segments):
            path.path_segments[path.index].metrics[DOMAIN_METRIC] = self.domain
        return await next.request(request)
