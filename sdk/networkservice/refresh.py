"""Element ``Refresh``: a client re-requests its connection before its path segment expires.

Contract: after each successful request, a timer is armed for a third of the time left until the
client's own path segment expires (``lifetime / 3`` when the segment carries no expiry); when it
fires, the connection is requested again through the client chain
(:class:`sdk.networkservice.clientbegin.ConnectionEvents`, in ``ctx.values[EVENTS]``), which
re-arms it. A refresh that fails reports the connection lost (``events.lost``), so a heal element
takes over. A close disarms the timer and cancels a refresh under way. Place it behind
``ClientBegin``, in front of ``UpdatePath``. :meth:`stop` disarms every timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import FabricError
from sdk.metrics import REFRESHES
from sdk.networkservice.clientbegin import EVENTS, ConnectionEvents
from sdk.networkservice.core import NetworkServiceElement, NSCursor

_log = structlog.get_logger("sdk.refresh")


def refresh_in(conn: Connection, lifetime: float, now: float) -> float:
    """Seconds until ``conn`` should be refreshed: a third of its own segment's time left."""
    segments = conn.path.path_segments
    index = conn.path.index
    if index >= len(segments) or not segments[index].HasField("expires"):
        return lifetime / 3
    expires = segments[index].expires
    left = expires.seconds + expires.nanos / 1e9 - now
    return max(0.0, left / 3)


class Refresh(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def armed(self) -> int:
        return len(self._timers)

    def _arm(self, conn: Connection, events: ConnectionEvents) -> None:
        self._disarm(conn.id)
        delay = refresh_in(conn, self.lifetime, self.clock())
        loop = asyncio.get_running_loop()
        self._timers[conn.id] = loop.call_later(delay, self._fire, events)

    def _disarm(self, conn_id: str) -> None:
        timer = self._timers.pop(conn_id, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, events: ConnectionEvents) -> None:
        self._timers.pop(events.conn_id, None)
        task = asyncio.create_task(self._refresh(events), name=f"refresh-{events.conn_id}")
        self._tasks[events.conn_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(events.conn_id, None))

    async def _refresh(self, events: ConnectionEvents) -> None:
        if events.closed:
            return
        try:
            await events.request()
        except FabricError as exc:
            REFRESHES.labels("failed").inc()
            _log.warning("refresh failed", connection_id=events.conn_id, error=str(exc))
            events.lost("refresh failed", reason="refresh")
            return
        REFRESHES.labels("ok").inc()

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = await next.request(request)
        events = next.ctx.values.get(EVENTS)
        if events is not None:
            self._arm(conn, events)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self._disarm(conn.id)
        task = self._tasks.pop(conn.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await next.close(conn)

    def stop(self) -> None:
        """Disarm every timer and cancel refreshes under way."""
        for conn_id in list(self._timers):
            self._disarm(conn_id)
        for task in self._tasks.values():
            task.cancel()
