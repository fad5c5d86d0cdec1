"""Element ``RebuildOnHeal``: a client's heal request rebuilds the path behind this hop.

Contract: a request in state ``DOWN`` (the client saw its connection fail) or
``RESELECT_REQUESTED`` asks this hop to rebuild what it built downstream: it sets
``ctx.values[REBUILD]`` (see :func:`request_rebuild`), so the forwarder is chosen again and
``Connect`` leaves the old path first (closing it when it can). The state sent on is ``UP``:
downstream hops see an ordinary request. Close passes through. Place it behind ``Reselect``
(which reads the state) and in front of the forwarder choice and ``Connect``.
"""

from __future__ import annotations

from api.proto.connection_pb2 import DOWN, RESELECT_REQUESTED, UP, Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, Key
from sdk.networkservice.core import NetworkServiceElement, NSCursor

#: Set when what this hop built downstream must be left and built again (a heal, a retry).
REBUILD: Key[bool] = Key("rebuild")


def request_rebuild(ctx: CallContext) -> None:
    """Ask the elements behind to leave the old downstream path and build a new one."""
    ctx.values[REBUILD] = True


class RebuildOnHeal(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        if conn.state in (DOWN, RESELECT_REQUESTED):
            request_rebuild(next.ctx)
        conn.state = UP
        return await next.request(request)
