"""The NetworkService chain: elements with ``request(req, next)`` and ``close(conn, next)``.

An element subclasses :class:`NetworkServiceElement` and overrides what it needs; the defaults
pass the call on unchanged. The chain ends in a tail that returns the request's connection as it
stands and closes nothing, so a chain of only pass-through elements answers a request with the
connection it was given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import cast

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, Cursor


class NSCursor(Cursor["NetworkServiceElement"]):
    """The ``next`` handed to a NetworkService element."""

    __slots__ = ()

    def request(self, request: NetworkServiceRequest) -> Awaitable[Connection]:
        return cast(Awaitable[Connection], self._call("request", request))

    def close(self, conn: Connection) -> Awaitable[None]:
        return cast(Awaitable[None], self._call("close", conn))


class NetworkServiceElement:
    """Base of NetworkService chain elements: pass-through unless overridden."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        await next.close(conn)


class _Tail(NetworkServiceElement):
    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        return request.connection

    async def close(self, conn: Connection, next: NSCursor) -> None:
        return None


class NetworkServiceChain:
    """A composed chain. To reuse a group of elements, build the list with
    :func:`sdk.chain.elements_of`; the group's elements then wrap the rest of the chain."""

    def __init__(self, elements: Iterable[NetworkServiceElement], trace: bool = False) -> None:
        self.elements = (*elements, _Tail())
        self.trace = trace

    def _cursor(self, ctx: CallContext | None) -> NSCursor:
        ctx = ctx or CallContext()
        ctx.trace = ctx.trace or self.trace
        return NSCursor(self.elements, 0, ctx)

    async def run_request(
        self, request: NetworkServiceRequest, ctx: CallContext | None = None
    ) -> Connection:
        """Enter the chain with a request (the entry point for servers and tests)."""
        return await self._cursor(ctx).request(request)

    async def run_close(self, conn: Connection, ctx: CallContext | None = None) -> None:
        """Enter the chain with a close."""
        await self._cursor(ctx).close(conn)
