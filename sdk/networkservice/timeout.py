"""Element ``Timeout``: closes a connection whose client stopped refreshing it.

Contract: after each successful request, a timer is armed for the expiry of the previous hop's
path segment (the caller's promise to refresh by then; the first segment's when this hop is the
first). When it fires, the connection is closed through ``close`` — normally the whole server
chain's ``run_close``, so ``Begin`` serialises it with any late refresh and every element behind
undoes its work. A refresh re-arms the timer; a close disarms it. Segments without an expiry
never time out. Place it after ``UpdatePath``; bind the chain with :meth:`Timeout.bind`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.stored import StoredConnection

_log = structlog.get_logger("sdk.timeout")

CloseFn = Callable[[Connection], Awaitable[None]]


def caller_expiry(conn: Connection) -> float | None:
    """The Unix time the caller's segment (or ours, at the first hop) expires, or None."""
    segments = conn.path.path_segments
    if not segments:
        return None
    segment = segments[max(conn.path.index - 1, 0)]
    if not segment.HasField("expires"):
        return None
    # Plain arithmetic, not ToNanoseconds(): that raises on an invalid Timestamp, and this runs
    # after the request succeeded (UpdatePath refuses invalid ones in requests).
    return segment.expires.seconds + segment.expires.nanos / 1e9


class Timeout(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._close: CloseFn | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, close: CloseFn) -> None:
        """Set how an expired connection is closed (usually ``chain.run_close``)."""
        self._close = close

    @property
    def armed(self) -> int:
        return len(self._timers)

    def _disarm(self, conn_id: str) -> None:
        timer = self._timers.pop(conn_id, None)
        if timer is not None:
            timer.cancel()

    def _arm(self, conn: Connection) -> None:
        self._disarm(conn.id)
        at = caller_expiry(conn)
        if at is None or self._close is None:
            return
        loop = asyncio.get_running_loop()
        # Kept compactly (sdk.networkservice.stored: ~4 KB instead of a 21 KB message copy with
        # a real path's tokens), restored only if it expires.
        expired = StoredConnection(conn)
        delay = max(0.0, at - self.clock())
        self._timers[conn.id] = loop.call_later(delay, self._fire, conn.id, expired)

    def _fire(self, conn_id: str, expired: StoredConnection) -> None:
        self._timers.pop(conn_id, None)
        conn = expired.restore()
        task = asyncio.create_task(self._expire(conn), name=f"timeout-{conn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, conn: Connection) -> None:
        assert self._close is not None
        _log.info("connection expired without refresh: closing", connection_id=conn.id)
        try:
            await self._close(conn)
        except Exception as exc:
            _log.warning("closing an expired connection failed", connection_id=conn.id,
                         error=str(exc))

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = await next.request(request)
        self._arm(conn)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._disarm(conn.id)
        await next.close(conn)

    async def settle(self) -> None:
        """Wait for the closes of expired connections already under way (timers stay armed)."""
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        """Disarm every timer and wait for closes already under way."""
        for conn_id in list(self._timers):
            self._disarm(conn_id)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
