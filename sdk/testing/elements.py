"""Small NetworkService elements for tests.

- :class:`Check` runs an assertion on every request/close passing through.
- :class:`InjectError` raises a chosen error on request and/or close (optionally only after
  ``after`` successful calls) — to prove that elements in front of it undo their work.
- :class:`Count` counts requests and closes that reached it.
- :class:`Respond` ends a chain with a connection changed by a function (a stand-in endpoint).
"""

from __future__ import annotations

from collections.abc import Callable

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class Check(NetworkServiceElement):
    """Calls ``on_request(request, ctx)`` / ``on_close(conn, ctx)`` then passes the call on."""

    def __init__(
        self,
        on_request: Callable[[NetworkServiceRequest, CallContext], None] | None = None,
        on_close: Callable[[Connection, CallContext], None] | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_close = on_close

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if self.on_request:
            self.on_request(request, next.ctx)
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        if self.on_close:
            self.on_close(conn, next.ctx)
        await next.close(conn)


class InjectError(NetworkServiceElement):
    """Raises ``error`` on the chosen operations once ``after`` calls have gone through."""

    def __init__(
        self,
        error: Exception,
        on_request: bool = True,
        on_close: bool = False,
        after: int = 0,
    ) -> None:
        self.error = error
        self.on_request = on_request
        self.on_close = on_close
        self.after = after
        self._passed = 0

    def _maybe_fail(self, applies: bool) -> None:
        if not applies:
            return
        if self._passed >= self.after:
            raise self.error
        self._passed += 1

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self._maybe_fail(self.on_request)
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._maybe_fail(self.on_close)
        await next.close(conn)


class Count(NetworkServiceElement):
    """Counts the requests and closes that reached it (and the ids it saw)."""

    def __init__(self) -> None:
        self.requests = 0
        self.closes = 0
        self.ids: set[str] = set()

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.requests += 1
        self.ids.add(request.connection.id)
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.closes += 1
        await next.close(conn)


class Respond(NetworkServiceElement):
    """Terminal: answers with the request's connection after ``change`` edited a copy of it."""

    def __init__(self, change: Callable[[Connection], None] | None = None) -> None:
        self.change = change

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = Connection()
        conn.CopyFrom(request.connection)
        if self.change:
            self.change(conn)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        return None
