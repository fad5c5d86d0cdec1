"""Element ``Heal``: a client notices that its connection is lost and requests it again.

Contract: once a request made a connection, the connection is watched for loss until it is
closed:

* **control plane** — one ``MonitorConnections`` stream to the node's nsmgr, scoped to the
  client's own path segment: the connection reported ``DOWN`` or deleted, or the stream breaking,
  counts as a loss (the stream is opened again after a short pause);
* **data plane** (with ``probe``) — every ``probe_interval`` the endpoint's first address is
  probed (``await probe(address) -> bool``, e.g. ICMP echo from the client's namespace) while no
  request is under way; ``probe_failures`` failures in a row since the last heal count as a loss
  that asks for another endpoint;
* anything else that reports one (``events.lost``: a failed refresh, :meth:`heal_now`).

A loss starts one heal (losses seen while it runs are covered by it): the connection is requested
again with state ``DOWN`` (``RESELECT_REQUESTED`` on the first attempt when another endpoint was
asked for), with jittered exponential back-off between attempts, until it succeeds — counted in
``events.heals`` — or fails with ``InvalidArgument`` (e.g. the client's namespace is gone): then
the connection's events end with that error and nothing heals it any more. A close stops the
watching, probing and healing of the connection. Place it behind ``ClientBegin``; :meth:`stop`
stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import structlog

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import (
    DELETE,
    DOWN,
    RESELECT_REQUESTED,
    Connection,
    ConnectionEvent,
    MonitorScopeSelector,
)
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.aio import cancel_all
from sdk.channels import ChannelPool
from sdk.errors import FabricError, InvalidArgument
from sdk.metrics import HEAL_SECONDS, HEALS
from sdk.networkservice.clientbegin import EVENTS, ConnectionEvents
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.select.backoff import delays

_log = structlog.get_logger("sdk.heal")

Probe = Callable[[str], Awaitable[bool]]
RESUBSCRIBE_PAUSE = 0.2  # seconds before a broken monitor stream is opened again


@dataclass
class _Watched:
    """What is running for one connection."""

    events: ConnectionEvents
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    healing: asyncio.Task[None] | None = None


def _mine(event: ConnectionEvent, conn_id: str) -> list[Connection]:
    return [c for c in event.connections.values()
            if any(s.id == conn_id for s in c.path.path_segments)]


def _probe_target(conn: Connection | None) -> str | None:
    if conn is None:
        return None
    for cidr in conn.context.ip_context.dst_ip_addrs:
        return cidr.split("/")[0]
    return None


class Heal(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self,
        pool: ChannelPool,
        nsmgr: str,
        probe: Probe | None = None,
        probe_interval: float = 0.2,
        probe_failures: int = 3,
    ) -> None:
        self.pool = pool
        self.nsmgr = nsmgr
        self.probe = probe
        self.probe_interval = probe_interval
        self.probe_failures = probe_failures
        self._watched: dict[str, _Watched] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def heal_now(self, conn_id: str, reselect: bool = False) -> None:
        """Heal connection ``conn_id`` now (optionally on another endpoint)."""
        watched = self._watched.get(conn_id)
        if watched is not None:
            self._lost(watched, "asked to heal", reselect, "asked")

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = await next.request(request)
        events = next.ctx.values.get(EVENTS)
        if events is not None and conn.id not in self._watched:
            watched = _Watched(events)
            self._watched[conn.id] = watched
            events.on_loss = lambda why, reselect, reason: self._lost(watched, why, reselect,
                                                                     reason)
            watched.tasks.append(asyncio.create_task(self._monitor(watched)))
            if self.probe is not None:
                watched.tasks.append(asyncio.create_task(self._probe(watched, self.probe)))
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        watched = self._watched.pop(conn.id, None)
        if watched is not None:
            await self._cancel(watched)
        await next.close(conn)

    async def stop(self) -> None:
        """Stop watching and healing every connection."""
        for conn_id in list(self._watched):
            await self._cancel(self._watched.pop(conn_id))

    async def _cancel(self, watched: _Watched) -> None:
        await cancel_all(t for t in (*watched.tasks, watched.healing) if t is not None)

    def _lost(self, watched: _Watched, why: str, reselect: bool, reason: str) -> None:
        if watched.healing is not None and not watched.healing.done():
            return  # the heal under way covers this loss
        HEALS.labels(reason).inc()
        watched.healing = asyncio.create_task(self._heal(watched.events, why, reselect))

    async def _heal(self, events: ConnectionEvents, reason: str, reselect: bool) -> None:
        _log.warning("healing", connection_id=events.conn_id, reason=reason, reselect=reselect)
        start = asyncio.get_running_loop().time()
        for attempt, pause in enumerate(delays(1_000_000, 0.05, 0.4)):
            if events.closed:
                return
            state = RESELECT_REQUESTED if reselect and attempt == 0 else DOWN
            try:
                await events.request(state, heal=True)
            except InvalidArgument as exc:
                _log.warning("heal gave up", connection_id=events.conn_id, error=str(exc))
                events.end(exc)  # e.g. the namespace is gone: retrying cannot help
                return
            except FabricError as exc:
                _log.info("heal attempt failed", connection_id=events.conn_id,
                          attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(pause)  # back-off between attempts
                continue
            took = asyncio.get_running_loop().time() - start
            HEAL_SECONDS.observe(took)
            _log.info("healed", connection_id=events.conn_id, seconds=round(took, 3))
            return

    async def _monitor(self, watched: _Watched) -> None:
        events = watched.events
        stub = connection_pb2_grpc.MonitorConnectionStub(self.pool.get(self.nsmgr))
        while True:
            selector = MonitorScopeSelector()
            conn = events.connection
            if conn is not None and conn.path.path_segments:
                own = conn.path.path_segments[0]
                selector.path_segments.add(id=own.id, name=own.name)
            try:
                async for event in stub.MonitorConnections(selector):
                    mine = _mine(event, events.conn_id)
                    if any(c.state == DOWN for c in mine) or (event.type == DELETE and mine):
                        self._lost(watched, "the nsmgr reports the connection down", False,
                                   "monitor")
            except grpc.aio.AioRpcError as exc:
                _log.info("monitor stream ended", connection_id=events.conn_id,
                          code=exc.code().name)
                self._lost(watched, "the monitor stream ended", False, "monitor")
            await asyncio.sleep(RESUBSCRIBE_PAUSE)  # pause before subscribing again

    async def _probe(self, watched: _Watched, probe: Probe) -> None:
        events = watched.events
        failures, heals = 0, events.heals
        while True:
            await asyncio.sleep(self.probe_interval)  # the probe period
            target = _probe_target(events.connection)
            healing = watched.healing is not None and not watched.healing.done()
            if target is None or events.busy or healing:
                continue  # not connected, or a request is under way
            if heals != events.heals:
                failures, heals = 0, events.heals  # count only failures since the last heal
            with contextlib.suppress(OSError):
                if await probe(target):
                    failures = 0
                    continue
            failures += 1
            if failures >= self.probe_failures:
                failures = 0
                self._lost(watched, "liveness probes failed", True, "probe")
