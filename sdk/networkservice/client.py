"""Client adapter ``Connect``: forwards a request to the next hop over gRPC.

Contract: the target is ``url`` when given, else ``ctx.values[CLIENT_URL]`` set by an element in
front (the forwarder or endpoint choice); a request without a target raises
:class:`sdk.errors.FailedPrecondition`. The call carries the remaining deadline (propagated hop
by hop); the remote's answer is returned with the path index and id put back to this hop's; a
failed call raises the :class:`sdk.errors.FabricError` matching its status. The current trace
context goes along in the call's metadata, and so do the headers an element in front gave for
the next hop (``ctx.values[SEND_HEADERS]``: the route a node manager hands its forwarder). A close
goes to ``url``, else to where the connection's last request went (with the headers that request
carried), else to ``ctx.values[CLIENT_URL]`` when an element in front set it for the close (a
restarted forwarder, told the route by its nsmgr); a connection that never went anywhere has
nothing downstream to close. Channels come from a :class:`sdk.channels.ChannelPool`.
Terminal: place it last.

Behind ``Metadata`` (per-connection ``ctx.metadata``) it remembers where each connection went and
what it got back, and it is the one element that **leaves the previous next hop**: when a request
goes to another target than the last one, for another endpoint, or with a rebuild asked for
(``ctx.values[REBUILD]``: a heal or a retry in front), while its path still continues past this
hop, the connection at the previous target is closed first (best effort, with the connection as
that target returned it, so its tokens are the ones it knows). When that close went through, or
the endpoint changed, the path is cut after this hop: the next hops start a fresh connection
with fresh ids. When it could not be closed (its hop died) and the endpoint is the same, the path
is kept: the hops that still hold the connection update it in place under the same ids instead
of keeping an orphan until it expires.
"""

from __future__ import annotations

from typing import NamedTuple

import grpc
import structlog

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import Key
from sdk.channels import ChannelPool
from sdk.errors import FabricError, FailedPrecondition
from sdk.grpcutil import fabric_error
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.rebuild import REBUILD
from sdk.networkservice.stored import StoredConnection
from sdk.tracing import inject


class Sent(NamedTuple):
    """Where a connection's last request went, what came back and the headers it carried."""

    url: str
    conn: StoredConnection
    headers: dict[str, str] | None


#: Where to send the request next, set by the element in front that chose the next hop.
CLIENT_URL: Key[str] = Key("connect.client_url")
#: Headers to send the next hop along with the call, set by the element in front that has them.
SEND_HEADERS: Key[dict[str, str]] = Key("connect.send_headers")
#: Metadata: target, connection as the target returned it (kept compactly,
#: :mod:`sdk.networkservice.stored`; restored only to leave that target) and the headers sent, of
#: the last success.
SENT: Key[Sent] = Key("connect.sent")

_log = structlog.get_logger("sdk.connect")


def _metadata(headers: dict[str, str] | None) -> list[tuple[str, str]]:
    """A call's metadata: the trace context and ``headers``."""
    metadata = inject()
    if headers:
        metadata.extend(headers.items())
    return metadata


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
        """Leave the previous next hop when this request does not continue there (see the
        module docstring)."""
        sent = next.ctx.metadata.get(SENT)
        conn = request.connection
        path = conn.path
        if sent is None or len(path.path_segments) <= path.index + 1:
            return
        old_url, old, old_headers = sent
        moved = old.endpoint != conn.network_service_endpoint_name
        if old_url == url and not moved and not next.ctx.values.get(REBUILD):
            return
        try:
            await self._close_at(old_url, old.restore(), next, old_headers)
            closed = True
        except FabricError as exc:
            _log.info("closing the connection at the previous next hop failed",
                      target=old_url, error=str(exc))
            closed = False
        next.ctx.metadata.pop(SENT)
        if closed or moved:
            del path.path_segments[path.index + 1 :]

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        url = self._target(next)
        await self._leave_previous(request, url, next)
        headers = next.ctx.values.get(SEND_HEADERS)
        try:
            conn: Connection = await self._stub(url).Request(
                request, timeout=next.ctx.remaining(), metadata=_metadata(headers)
            )
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
        # The answer comes back pointing at the next hop's segment; seen from this hop it is
        # this hop's connection again.
        conn.path.index = request.connection.path.index
        conn.id = request.connection.id
        next.ctx.metadata[SENT] = Sent(url, StoredConnection(conn), headers)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        sent = next.ctx.metadata.get(SENT)
        if sent is not None:
            await self._close_at(self.url or sent.url, conn, next, sent.headers)
            return
        url = self.url or next.ctx.values.get(CLIENT_URL)
        if url is None:
            return  # the connection never went anywhere from here: nothing to close downstream
        await self._close_at(url, conn, next, next.ctx.values.get(SEND_HEADERS))

    async def _close_at(self, url: str, conn: Connection, next: NSCursor,
                        headers: dict[str, str] | None) -> None:
        try:
            await self._stub(url).Close(conn, timeout=next.ctx.remaining(),
                                        metadata=_metadata(headers))
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
