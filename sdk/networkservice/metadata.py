"""Element ``Metadata``: a per-connection dictionary that lives from first request to close.

Contract: while a request or close is inside the chain, ``next.ctx.metadata`` is the
:class:`sdk.chain.Values` of that connection id, the same object on every refresh, so elements
behind it can keep what they must undo later (keys, interface names, allocated addresses). A failed
first request drops the dictionary again; a close drops it after the elements behind it ran, even
if they failed. Place it right after ``Begin`` (and so behind ``UpdatePath``: the path index is
this hop's).


It also keeps the connection on the path it was built on: the segments after this hop's (the
hops this one chose downstream) are remembered from each successful reply, and a later request or
close for the same id continues along them whatever the caller sent after this hop's segment.
The rest of the path is this hop's business, not the caller's: a caller that dropped or altered
it would otherwise make this hop build a second downstream connection that nothing closes (a
request), or close nothing while forgetting the connection (a close).
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import Values
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.stored import StoredSegments


class Metadata(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self) -> None:
        self._by_id: dict[str, Values] = {}
        #: Kept compactly (:mod:`sdk.networkservice.stored`): their tokens are most of them.
        self._downstream: dict[str, StoredSegments] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, conn_id: str) -> Values | None:
        """The metadata of a live connection, or None."""
        return self._by_id.get(conn_id)

    def _continue_path(self, conn: Connection) -> None:
        """Put back the segments after this hop's that the connection was built on."""
        downstream = self._downstream.get(conn.id)
        segments = conn.path.path_segments
        if downstream is None or conn.path.index >= len(segments):
            return
        del segments[conn.path.index + 1 :]
        segments.extend(downstream.restore())

    def _remember_path(self, conn_id: str, index: int, reply: Connection) -> None:
        self._downstream[conn_id] = StoredSegments(reply.path.path_segments[index + 1 :])

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn_id = request.connection.id
        index = request.connection.path.index
        first = conn_id not in self._by_id
        next.ctx.metadata = self._by_id.setdefault(conn_id, Values())
        self._continue_path(request.connection)
        try:
            reply = await next.request(request)
        except BaseException:
            if first:
                self._by_id.pop(conn_id, None)
            raise
        self._remember_path(conn_id, index, reply)
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        next.ctx.metadata = self._by_id.get(conn.id, Values())
        self._continue_path(conn)
        try:
            await next.close(conn)
        finally:
            self._by_id.pop(conn.id, None)
            self._downstream.pop(conn.id, None)
