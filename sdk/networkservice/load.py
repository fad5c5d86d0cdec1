"""Element ``CountLoad``: how many connections each endpoint serves through this hop.

Contract: after a successful request, the connection counts against the endpoint in the reply
(moved from the endpoint it counted against before, if another); a close removes it (whether or
not the close downstream succeeds). ``load(name)`` is the count, which the least-connections
policy reads; counts never go below zero and endpoints at zero are dropped, so the map does not
grow with churn. A failed request changes nothing. Place it behind ``Metadata``, in front of
``Retry`` (it counts the outcome, not the attempts).
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import Key
from sdk.networkservice.core import NetworkServiceElement, NSCursor

#: Metadata: the endpoint this connection is counted against.
COUNTED: Key[str] = Key("load.counted")


class CountLoad(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def load(self, endpoint: str) -> int:
        return self.counts.get(endpoint, 0)

    def _add(self, endpoint: str, delta: int) -> None:
        count = self.counts.get(endpoint, 0) + delta
        if count > 0:
            self.counts[endpoint] = count
        else:
            self.counts.pop(endpoint, None)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        reply = await next.request(request)
        md = next.ctx.metadata
        old, new = md.get(COUNTED), reply.network_service_endpoint_name
        if old != new:
            if old is not None:
                self._add(old, -1)
            self._add(new, 1)
            md[COUNTED] = new
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        counted = next.ctx.metadata.pop(COUNTED)
        if counted is not None:
            self._add(counted, -1)
        await next.close(conn)
