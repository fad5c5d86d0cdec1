"""Client adapter ``Connect``: forwards a request to the next hop over gRPC.

Contract: the target is ``url`` when given, else ``ctx.values[CLIENT_URL]`` set by an element in
front (discover/select/route); a request without a target raises
:class:`sdk.errors.FailedPrecondition`. The call carries the remaining deadline (propagated hop
by hop); the remote's answer is returned with the path index and id put back to this hop's; a
failed call raises the :class:`sdk.errors.FabricError` matching its status. Close goes to the
same kind of target. Channels come from a :class:`sdk.channels.ChannelPool`. Terminal: place it
last.

Behind ``Metadata`` (per-connection ``ctx.metadata``) it also remembers where each connection
went and what it got back. When a refresh goes to another target while its path still continues
to the previous one (an element in front changed its mind, or the caller changed the request so
that it did), the connection at the previous target is closed first (best effort, with the
connection as that target returned it, so its tokens are the ones it knows) and the path is cut
after this hop: the new target starts a fresh connection and nothing is left at the old one.
"""

from __future__ import annotations

import grpc
import structlog

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.channels import ChannelPool
from sdk.errors import FabricError, FailedPrecondition
from sdk.grpcutil import fabric_error
from sdk.networkservice.core import NetworkServiceElement, NSCursor

CLIENT_URL = "client_url"
#: Metadata key: ``(target, connection as the target returned it)`` of the last success.
SENT = "connect_sent"

_log = structlog.get_logger("sdk.connect")


class Connect(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, pool: ChannelPool, url: str | None = None) -> None:
        self.pool = pool
        self.url = url

    def _target(self, next: NSCursor) -> str:
        url = self.url or next.ctx.values.get(CLIENT_URL)
        if not url:
            raise FailedPrecondition("no next hop was chosen for this connection")
        return str(url)

    def _stub(self, url: str) -> networkservice_pb2_grpc.NetworkServiceAsyncStub:
        return networkservice_pb2_grpc.NetworkServiceStub(self.pool.get(url))

    async def _leave_previous(self, request: NetworkServiceRequest, url: str,
                              next: NSCursor) -> None:
        """Close the connection at the previous target if this refresh goes elsewhere."""
        sent: tuple[str, Connection] | None = next.ctx.metadata.get(SENT)
        path = request.connection.path
        if sent is None or sent[0] == url or len(path.path_segments) <= path.index + 1:
            return
        old_url, old = sent
        try:
            await self._close_at(old_url, old, next)
        except FabricError as exc:
            _log.info("closing the connection at the previous next hop failed",
                      target=old_url, error=str(exc))
        del path.path_segments[path.index + 1 :]
        next.ctx.metadata.pop(SENT, None)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        url = self._target(next)
        await self._leave_previous(request, url, next)
        try:
            conn: Connection = await self._stub(url).Request(
                request, timeout=next.ctx.remaining()
            )
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
        # The answer comes back pointing at the next hop's segment; seen from this hop it is
        # this hop's connection again.
        conn.path.index = request.connection.path.index
        conn.id = request.connection.id
        kept = Connection()
        kept.CopyFrom(conn)
        next.ctx.metadata[SENT] = (url, kept)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        await self._close_at(self._target(next), conn, next)

    async def _close_at(self, url: str, conn: Connection, next: NSCursor) -> None:
        try:
            await self._stub(url).Close(conn, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
