"""Element ``DefaultDeadline``: every call gets a deadline, so no hop can wait forever.

Contract: a request or close that arrives without a deadline gets ``seconds`` from now; one that
has a deadline keeps it (deadlines only shrink along the path). Place it first.
"""

from __future__ import annotations

import time

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class DefaultDeadline(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise InvalidArgument("request_timeout", "must be a positive number of seconds")
        self.seconds = seconds

    def _ensure(self, next: NSCursor) -> None:
        if next.ctx.deadline is None:
            next.ctx.deadline = time.monotonic() + self.seconds

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self._ensure(next)
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._ensure(next)
        await next.close(conn)
