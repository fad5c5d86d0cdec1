"""Element ``Monitor`` and its gRPC service: NSM's ``connection.MonitorConnection``.

Contract of the element: after each successful request it records the connection as returned
at this hop (kept compactly, :mod:`sdk.networkservice.stored`) and announces it (``UPDATE``);
after a close it announces ``DELETE``. ``mark_down``
lets the process announce that connections lost a downstream component (state ``DOWN``), so
clients heal without waiting for their own checks; connections being closed are left alone.
Place it right after ``UpdatePath``/``Timeout``.

The service streams, per ``MonitorConnections(selector)`` call: first ``INITIAL_STATE_TRANSFER``
with every matching connection, then ``UPDATE``/``DELETE`` events as they happen. A connection
matches when any of its path segment ids equals the id of a segment in the selector (NSM's
semantics); an empty selector matches everything. A caller that connects over mTLS sees only the
connections whose signed path names it (as a signer or an audience of a path token), so one
node's nsmgr cannot watch another's unrelated connections; such a caller holds those tokens
anyway (they come back to it in every reply), so it gets them as they are. Local callers (Unix
socket, e.g. ``nsmctl status``, a client watching its own connection) cannot be told apart, so
they see every connection (or what their selector names) but never a token: each path
segment's ``token`` is replaced by its fingerprint (``sha256:`` + 16 characters, as
:mod:`sdk.security.redact` shows it), so a token seen by a local process cannot be replayed.

Every subscriber has a bounded backlog: at most :data:`MAX_BACKLOG_EVENTS` events or
:data:`MAX_BACKLOG_BYTES` bytes of events it wants but has not taken yet. One that falls further
behind (a stream nobody reads) is cut: its stream ends with ``RESOURCE_EXHAUSTED`` naming the
limit, its backlog is dropped at once, and it may subscribe again (it starts over with
``INITIAL_STATE_TRANSFER``, as the clients and nsmgrs that follow monitors do when a stream ends).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
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
from sdk.errors import ResourceExhausted
from sdk.grpcutil import stream_edge
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.stored import StoredConnection
from sdk.security.peer import peer_spiffe_id
from sdk.security.redact import PREFIX
from sdk.security.token import path_identities, token_hash

Context = grpc.aio.ServicerContext[Any, Any]

#: Most events one subscriber may have waiting.
MAX_BACKLOG_EVENTS = 1024
#: Most bytes (serialized size) of events one subscriber may have waiting.
MAX_BACKLOG_BYTES = 16 * 1024 * 1024


def _matches(selector: MonitorScopeSelector, conn: Connection) -> bool:
    wanted = {segment.id for segment in selector.path_segments if segment.id}
    return not wanted or any(segment.id in wanted for segment in conn.path.path_segments)


class _Subscriber:
    """One stream's backlog: the events it wants, bounded (see the module docstring)."""

    def __init__(
        self, wanted: Callable[[Connection], bool], max_events: int, max_bytes: int
    ) -> None:
        self.wanted = wanted
        self.max_events = max_events
        self.max_bytes = max_bytes
        #: Each event offered, the ids of its connections this subscriber wants, its size.
        self.events: deque[tuple[ConnectionEvent, list[str], int]] = deque()
        self.bytes = 0
        self.ready = asyncio.Event()
        self.ended = False
        self.cut: ResourceExhausted | None = None

    def offer(self, event: ConnectionEvent, size: int) -> None:
        if self.ended or self.cut is not None:
            return
        wanted = [conn_id for conn_id, conn in event.connections.items() if self.wanted(conn)]
        if not wanted:
            return
        if len(self.events) >= self.max_events or self.bytes + size > self.max_bytes:
            self.cut = ResourceExhausted(
                f"connection monitor: this subscriber fell behind by more than "
                f"{self.max_events} events or {self.max_bytes} bytes (the limit per "
                "subscriber): read the stream promptly; subscribe again to get the current state"
            )
            self.events.clear()
            self.bytes = 0
        else:
            self.events.append((event, wanted, size))
            self.bytes += size
        self.ready.set()

    def end(self) -> None:
        self.ended = True
        self.ready.set()

    async def next(self) -> tuple[ConnectionEvent, list[str]] | None:
        """The next wanted event and the ids of its connections this subscriber wants (judged
        once, when it was offered); None when the stream ends; raises when it was cut."""
        while not self.events:
            if self.cut is not None:
                raise self.cut
            if self.ended:
                return None
            self.ready.clear()
            await self.ready.wait()
        event, wanted, size = self.events.popleft()
        self.bytes -= size
        return event, wanted


class Monitor(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self, max_backlog_events: int = MAX_BACKLOG_EVENTS,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        #: The live connections as returned at this hop, kept compactly (restore() each).
        self.connections: dict[str, StoredConnection] = {}
        self.max_backlog_events = max_backlog_events
        self.max_backlog_bytes = max_backlog_bytes
        self._closing: set[str] = set()
        self._subscribers: set[_Subscriber] = set()

    def _publish(self, kind: ConnectionEventType.ValueType, conn: Connection) -> None:
        if not self._subscribers:
            return
        event = ConnectionEvent(type=kind)
        event.connections[conn.id].CopyFrom(conn)
        size = event.ByteSize()
        for subscriber in self._subscribers:
            subscriber.offer(event, size)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = await next.request(request)
        self.connections[conn.id] = StoredConnection(conn, keep_path=True)
        self._publish(UPDATE, conn)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._closing.add(conn.id)
        try:
            await next.close(conn)
        finally:
            self._closing.discard(conn.id)
            gone = self.connections.pop(conn.id, None)
            if self._subscribers:
                self._publish(DELETE, conn if gone is None else gone.restore())

    def mark_down(self, affected: Callable[[StoredConnection], bool]) -> list[str]:
        """Announce state DOWN for every connection ``affected`` selects (it is given the kept
        copy, whose ``path_ids``/``path_names`` it can read without restoring the connection);
        returns their ids."""
        ids = []
        for conn_id, kept in list(self.connections.items()):
            if conn_id in self._closing or kept.down or not affected(kept):
                continue
            conn = kept.restore()
            conn.state = DOWN
            self.connections[conn_id] = StoredConnection(conn, keep_path=True)
            self._publish(UPDATE, conn)
            ids.append(conn_id)
        return ids

    def end_all(self) -> None:
        """End every monitor stream (graceful shutdown)."""
        for subscriber in self._subscribers:
            subscriber.end()

    async def events(
        self, selector: MonitorScopeSelector, visible: Callable[[Connection], bool] | None = None
    ) -> AsyncGenerator[ConnectionEvent, None]:
        """The stream described in the module docstring, limited to ``visible`` connections."""

        def wanted(conn: Connection) -> bool:
            return _matches(selector, conn) and (visible is None or visible(conn))

        subscriber = _Subscriber(wanted, self.max_backlog_events, self.max_backlog_bytes)
        self._subscribers.add(subscriber)
        try:
            initial = ConnectionEvent(type=INITIAL_STATE_TRANSFER)
            for conn_id, kept in list(self.connections.items()):
                conn = kept.restore()
                if wanted(conn):
                    initial.connections[conn_id].CopyFrom(conn)
            yield initial
            while (offered := await subscriber.next()) is not None:
                event, ids = offered
                out = ConnectionEvent(type=event.type)  # the subscriber's own copy
                for conn_id in ids:
                    out.connections[conn_id].CopyFrom(event.connections[conn_id])
                yield out
        finally:
            self._subscribers.discard(subscriber)


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
            if caller is None:
                redact(event)
            yield event


def names(conn: Connection, identity: str) -> bool:
    """Whether ``conn``'s path tokens name ``identity`` (see the module docstring)."""
    return identity in path_identities(s.token for s in conn.path.path_segments)


def redact(event: ConnectionEvent) -> None:
    """Replace every path token in ``event`` (a copy of the monitor's) by its fingerprint."""
    for conn in event.connections.values():
        for segment in conn.path.path_segments:
            if segment.token:
                segment.token = PREFIX + token_hash(segment.token)[:16]


def add_monitor(server: grpc.aio.Server, monitor: Monitor) -> None:
    """Serve ``monitor`` as ``connection.MonitorConnection`` on ``server``."""
    connection_pb2_grpc.add_MonitorConnectionServicer_to_server(MonitorServicer(monitor), server)
