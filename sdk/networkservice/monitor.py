"""Element ``Monitor`` and its gRPC service: NSM's ``connection.MonitorConnection``.

Contract of the element: after each successful request it records the connection as returned
at this hop and announces it (``UPDATE``); after a close it announces ``DELETE``. ``mark_down``
lets the process announce that connections lost a downstream component (state ``DOWN``), so
clients heal without waiting for their own checks; connections being closed are left alone.
Place it right after ``UpdatePath``/``Timeout``.

The service streams, per ``MonitorConnections(selector)`` call: first ``INITIAL_STATE_TRANSFER``
with every matching connection, then ``UPDATE``/``DELETE`` events as they happen. A connection
matches when any of its path segment ids equals the id of a segment in the selector (NSM's
semantics); an empty selector matches everything. A caller that connects over mTLS sees only the
connections whose signed path names it (as a signer or an audience of a path token), so one
node's nsmgr cannot watch another's unrelated connections; local callers (Unix socket, e.g.
``nsmctl status``) see every connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import (
    DELETE,
    DOWN,
    INITIAL_STATE_TRANSFER,
    UPDATE,
    Connection,
    ConnectionEvent,
    ConnectionEventType,
    MonitorScopeSelector,
)
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.grpcutil import stream_edge
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.security.peer import peer_spiffe_id
from sdk.security.token import path_identities

Context = grpc.aio.ServicerContext[Any, Any]


def _matches(selector: MonitorScopeSelector, conn: Connection) -> bool:
    wanted = {segment.id for segment in selector.path_segments if segment.id}
    return not wanted or any(segment.id in wanted for segment in conn.path.path_segments)


class Monitor(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self._closing: set[str] = set()
        self._subscribers: set[asyncio.Queue[ConnectionEvent | None]] = set()

    def _publish(self, kind: ConnectionEventType.ValueType, conn: Connection) -> None:
        event = ConnectionEvent(type=kind)
        event.connections[conn.id].CopyFrom(conn)
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = await next.request(request)
        kept = Connection()
        kept.CopyFrom(conn)
        self.connections[conn.id] = kept
        self._publish(UPDATE, kept)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._closing.add(conn.id)
        try:
            await next.close(conn)
        finally:
            self._closing.discard(conn.id)
            gone = self.connections.pop(conn.id, None)
            self._publish(DELETE, gone or conn)

    def mark_down(self, affected: Callable[[Connection], bool]) -> list[str]:
        """Announce state DOWN for every connection ``affected`` selects; returns their ids."""
        ids = []
        for conn in self.connections.values():
            if conn.id not in self._closing and affected(conn) and conn.state != DOWN:
                conn.state = DOWN
                self._publish(UPDATE, conn)
                ids.append(conn.id)
        return ids

    def end_all(self) -> None:
        """End every monitor stream (graceful shutdown)."""
        for queue in self._subscribers:
            queue.put_nowait(None)

    async def events(
        self, selector: MonitorScopeSelector, visible: Callable[[Connection], bool] | None = None
    ) -> AsyncIterator[ConnectionEvent]:
        """The stream described in the module docstring, limited to ``visible`` connections."""

        def wanted(conn: Connection) -> bool:
            return _matches(selector, conn) and (visible is None or visible(conn))

        queue: asyncio.Queue[ConnectionEvent | None] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            initial = ConnectionEvent(type=INITIAL_STATE_TRANSFER)
            for conn_id, conn in self.connections.items():
                if wanted(conn):
                    initial.connections[conn_id].CopyFrom(conn)
            yield initial
            while (event := await queue.get()) is not None:
                matching = {k: v for k, v in event.connections.items() if wanted(v)}
                if matching:
                    out = ConnectionEvent(type=event.type)
                    for conn_id, conn in matching.items():
                        out.connections[conn_id].CopyFrom(conn)
                    yield out
        finally:
            self._subscribers.discard(queue)


class MonitorServicer(connection_pb2_grpc.MonitorConnectionServicer):
    """gRPC ``connection.MonitorConnection`` over a :class:`Monitor`."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    @stream_edge
    async def MonitorConnections(  # type: ignore[override]
        self, request: MonitorScopeSelector, context: Context
    ) -> AsyncIterator[ConnectionEvent]:
        caller = peer_spiffe_id(context)
        visible = None if caller is None else (lambda conn: names(conn, caller))
        async for event in self.monitor.events(request, visible):
            yield event


def names(conn: Connection, identity: str) -> bool:
    """Whether ``conn``'s path tokens name ``identity`` (see the module docstring)."""
    return identity in path_identities(s.token for s in conn.path.path_segments)


def add_monitor(server: grpc.aio.Server, monitor: Monitor) -> None:
    """Serve ``monitor`` as ``connection.MonitorConnection`` on ``server``."""
    connection_pb2_grpc.add_MonitorConnectionServicer_to_server(MonitorServicer(monitor), server)
