"""Client adapter ``Connect``: forwards a request to the next hop over gRPC.

Contract: the target is ``url`` when given, else ``ctx.values[CLIENT_URL]`` set by an element in
front (discover/select/route); a request without a target raises
:class:`sdk.errors.FailedPrecondition`. The call carries the remaining deadline (propagated hop
by hop); the remote's answer is returned with the path index and id put back to this hop's; a
failed call raises the :class:`sdk.errors.FabricError` matching its status. Close goes to the
same kind of target. Channels come from a :class:`sdk.channels.ChannelPool`. Terminal: place it
last.
"""

from __future__ import annotations

import grpc

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.channels import ChannelPool
from sdk.errors import FailedPrecondition
from sdk.grpcutil import fabric_error
from sdk.networkservice.core import NetworkServiceElement, NSCursor

CLIENT_URL = "client_url"


class Connect(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, pool: ChannelPool, url: str | None = None) -> None:
        self.pool = pool
        self.url = url

    def _stub(self, next: NSCursor) -> networkservice_pb2_grpc.NetworkServiceAsyncStub:
        url = self.url or next.ctx.values.get(CLIENT_URL)
        if not url:
            raise FailedPrecondition("no next hop was chosen for this connection")
        return networkservice_pb2_grpc.NetworkServiceStub(self.pool.get(url))

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        stub = self._stub(next)
        try:
            conn: Connection = await stub.Request(request, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
        # The answer comes back pointing at the next hop's segment; seen from this hop it is
        # this hop's connection again.
        conn.path.index = request.connection.path.index
        conn.id = request.connection.id
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        stub = self._stub(next)
        try:
            await stub.Close(conn, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
