"""Element ``ServesOnly``: an endpoint accepts requests only for the network services it provides.

Contract: on request, ``connection.network_service`` must be one of ``services`` (the ones the
endpoint registered), else :class:`sdk.errors.InvalidArgument` names the field and the services
it does provide; nothing behind it runs. The nsmgr already refuses a client that names an
endpoint of another service; this keeps an endpoint from serving one it never offered even
when a request reaches it some other way. Close passes through.
"""

from __future__ import annotations

from collections.abc import Iterable

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class ServesOnly(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, services: Iterable[str]) -> None:
        self.services = frozenset(services)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        service = request.connection.network_service
        if service not in self.services:
            raise InvalidArgument(
                "connection.network_service",
                f"this endpoint does not provide {service!r}; it provides "
                f"{', '.join(sorted(self.services))}",
            )
        return await next.request(request)
