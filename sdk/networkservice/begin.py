"""Element ``Begin``: one event at a time per connection, and the connection id on every log line.

Contract: requests and closes carrying the same connection id run strictly one after another
(in arrival order); different connections run concurrently. While the call is inside the chain,
structlog's context carries ``connection_id``. A request without an id is rejected with
:class:`sdk.errors.InvalidArgument` (put ``UpdatePath`` on the client side to assign one). Holds no
per-connection state after the last call for an id leaves. Place it first in a server chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.keyedlock import KeyedLock
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class Begin(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self) -> None:
        self._serial = KeyedLock()

    @property
    def active(self) -> int:
        """How many connection ids have a call inside the chain or waiting for one."""
        return len(self._serial)

    @asynccontextmanager
    async def _serialised(self, conn_id: str) -> AsyncIterator[None]:
        async with self._serial(conn_id):
            with structlog.contextvars.bound_contextvars(connection_id=conn_id):
                yield

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn_id = request.connection.id
        if not conn_id:
            raise InvalidArgument(
                "connection.id", "must not be empty: the client names its connection"
            )
        async with self._serialised(conn_id):
            return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        if not conn.id:
            raise InvalidArgument("id", "must not be empty: name the connection to close")
        async with self._serialised(conn.id):
            await next.close(conn)
