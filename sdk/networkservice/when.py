"""Element ``When``: apply an element only to requests that satisfy a condition.

Contract: if ``condition(request)`` holds, the request goes through ``element`` (which calls
``next`` as usual); otherwise straight to ``next``. Closes always go through ``element`` when the
request did (tracked per connection id), else straight on. Example: nsmgr authorizes only at the
hop that serves the client itself (``When(first_hop, Authorize(policy))``).
"""

from __future__ import annotations

from collections.abc import Callable

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor


def first_hop(request: NetworkServiceRequest) -> bool:
    """Whether this hop serves the client directly (its segment is the first or second)."""
    return request.connection.path.index <= 1


class When(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self, condition: Callable[[NetworkServiceRequest], bool], element: NetworkServiceElement
    ) -> None:
        self.condition = condition
        self.element = element
        self._applied: set[str] = set()

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if not self.condition(request):
            return await next.request(request)
        conn = await self.element.request(request, next)
        self._applied.add(conn.id)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        if conn.id in self._applied:
            self._applied.discard(conn.id)
            await self.element.close(conn, next)
        else:
            await next.close(conn)
