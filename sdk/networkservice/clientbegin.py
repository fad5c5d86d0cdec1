"""Element ``ClientBegin``: a client's connections, and the events later elements raise on them.

Contract: the first element of a client chain. Requests and closes of one connection id run one
at a time (in arrival order). For every connection that a request made, it keeps a
:class:`ConnectionEvents` — the last request and the latest connection — and puts it in
``ctx.values[EVENTS]`` for the elements behind, so that they can act on the connection later,
outside any call: re-request it (``events.request(state)``: the same request with the latest
connection, through the elements behind this one, one at a time with the caller's calls), close
it, or end it with an error (``events.end(error)``: a heal that cannot succeed). ``on_change``
is told of every new version of the connection. A failed first request keeps nothing; a close
forgets the connection (and ends its events) whether or not the close downstream succeeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from api.proto.connection_pb2 import UP, Connection
from api.proto.connection_pb2 import State as ConnectionState
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, Key
from sdk.errors import FailedPrecondition
from sdk.keyedlock import KeyedLock
from sdk.networkservice.core import NetworkServiceElement, NSCursor

ChangeFn = Callable[[Connection], None]
_log = structlog.get_logger("sdk.clientbegin")


class ConnectionEvents:
    """One connection of a client, as elements behind ``ClientBegin`` may act on it later."""

    def __init__(self, begin: ClientBegin, conn_id: str, request: NetworkServiceRequest,
                 cursor: NSCursor) -> None:
        self._begin = begin
        self.conn_id = conn_id
        self._request = request
        self._cursor = cursor
        self.connection: Connection | None = None
        self.heals = 0
        #: Set by a heal element: ``on_loss(why, reselect, reason)`` asks it to heal the
        #: connection (``reason``: a metric label, one of monitor, probe, refresh, asked).
        self.on_loss: Callable[[str, bool, str], None] | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def busy(self) -> bool:
        """Whether a call for this connection is under way."""
        return self._begin.busy(self.conn_id)

    @property
    def closed(self) -> bool:
        return self.ended.done()

    async def request(self, state: ConnectionState.ValueType = UP, heal: bool = False) -> (
        Connection
    ):
        """Request the connection again (a refresh, or with ``DOWN``/``RESELECT_REQUESTED`` a
        heal); ``heal`` counts it as one once it succeeded."""
        request = NetworkServiceRequest()
        request.CopyFrom(self._request)
        if self.connection is not None:
            request.connection.CopyFrom(self.connection)
        request.connection.state = state
        async with self._begin.serial(self.conn_id):
            if self.closed:
                raise FailedPrecondition(f"connection {self.conn_id} was closed meanwhile")
            ctx = CallContext.with_timeout(self._begin.request_timeout)
            ctx.values[EVENTS] = self
            conn = await self._cursor.with_context(ctx).request(request)
            self.heals += heal
            self.update(conn)
        return conn

    def update(self, conn: Connection) -> None:
        """Keep the latest version of the connection and tell ``on_change``."""
        self.connection = conn
        if self._begin.on_change is not None:
            self._begin.on_change(conn)

    def lost(self, why: str, reselect: bool = False, reason: str = "asked") -> None:
        """The connection seems lost (``why``, for the log; ``reselect``: ask for another
        endpoint; ``reason``: what noticed it): heal it when a heal element is in the chain."""
        if self.on_loss is not None and not self.closed:
            self.on_loss(why, reselect, reason)
        else:
            _log.warning("connection lost and nothing heals it", connection_id=self.conn_id,
                         reason=why)

    def end(self, error: BaseException | None = None) -> None:
        """The connection cannot be kept any more (``error``) or was closed (None)."""
        if not self.ended.done():
            if error is None:
                self.ended.set_result(None)
            else:
                self.ended.set_exception(error)
                self.ended.exception()  # retrieved here too: nobody may be waiting for it


#: The events of the connection in the call (see :class:`ConnectionEvents`).
EVENTS: Key[ConnectionEvents] = Key("clientbegin.events")


class ClientBegin(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, request_timeout: float = 15.0, on_change: ChangeFn | None = None) -> None:
        self.request_timeout = request_timeout
        self.on_change = on_change
        self.serial = KeyedLock()
        self.connections: dict[str, ConnectionEvents] = {}

    def busy(self, conn_id: str) -> bool:
        return self.serial.held(conn_id)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn_id = request.connection.id
        async with self.serial(conn_id):
            events = self.connections.get(conn_id)
            if events is None:
                kept = NetworkServiceRequest()
                kept.CopyFrom(request)
                events = ConnectionEvents(self, conn_id, kept, next)
            next.ctx.values[EVENTS] = events
            conn = await next.request(request)
            self.connections[conn_id] = events
            events.update(conn)
            return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        async with self.serial(conn.id):
            events = self.connections.pop(conn.id, None)
            if events is not None:
                events.end()
                next.ctx.values[EVENTS] = events
            await next.close(conn)
