"""The forwarder's live counters, served as NSM's ``MonitorConnection`` API.

The counters in a connection's path are written when a request (or refresh) passes the
forwarder, so they age between refreshes. :class:`Counters` answers ``MonitorConnections`` with
one ``INITIAL_STATE_TRANSFER`` event whose connections are this forwarder's vWires, keyed by the
forwarder's connection id (its path segment id), each with one path segment (that id, the
forwarder's name) whose ``metrics`` were read at the moment of asking: interface byte and packet
counters (``client_rx_bytes`` ...), ``mtu`` and, for a tunnel, ``wireguard_rx_bytes``,
``wireguard_tx_bytes`` and ``wireguard_last_handshake_age_seconds`` (see
:mod:`forwarder.vwire.handle`). Then the stream ends: ask again for fresh numbers. The scope
selector is not applied. Counters are not secrets; the service is served where the forwarder's
chain is (its Unix socket). ``nsmctl status`` reads it to show live numbers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import (
    INITIAL_STATE_TRANSFER,
    ConnectionEvent,
    MonitorScopeSelector,
    PathSegment,
)

ReadCounters = Callable[[], Awaitable[dict[str, dict[str, str]]]]


class Counters(connection_pb2_grpc.MonitorConnectionServicer):
    """See the module docstring; ``read`` is e.g. :meth:`forwarder.xconnect.Xconnect.counters`."""

    def __init__(self, name: str, read: ReadCounters) -> None:
        self.name = name
        self.read = read

    async def MonitorConnections(
        self, request: MonitorScopeSelector, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ConnectionEvent]:
        event = ConnectionEvent(type=INITIAL_STATE_TRANSFER)
        for conn_id, metrics in sorted((await self.read()).items()):
            conn = event.connections[conn_id]
            conn.id = conn_id
            conn.path.path_segments.append(PathSegment(id=conn_id, name=self.name,
                                                       metrics=metrics))
        yield event


def add_counters(server: grpc.aio.Server, counters: Counters) -> None:
    """Serve ``counters`` on ``server``."""
    connection_pb2_grpc.add_MonitorConnectionServicer_to_server(counters, server)
