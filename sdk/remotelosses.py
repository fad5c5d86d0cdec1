"""Losses further down the path reach this hop's clients: following the next hops' monitor streams
(an nsmgr follows other nodes' nsmgrs and its gateway; a gateway follows what it relays to).

Contract of :class:`RemoteLossWatch`: ``follow(url)`` (idempotent) keeps one
``MonitorConnections`` stream open to the nsmgr at ``url`` — re-opened with back-off if it
breaks — and whenever that nsmgr reports a connection DOWN or deleted while this node still
has it open, the matching connections here (same client segment) are announced DOWN on this
nsmgr's monitor, so their clients heal at once instead of at their next refresh. A client's own
close is not announced (``Monitor`` skips connections being closed).
"""

from __future__ import annotations

import asyncio

import grpc
import structlog

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import DELETE, DOWN, ConnectionEvent, MonitorScopeSelector
from sdk.aio import cancel_all
from sdk.channels import ChannelPool
from sdk.networkservice.monitor import Monitor
from sdk.select.backoff import delays

_log = structlog.get_logger("sdk.remotelosses")


class RemoteLossWatch:
    """See the module docstring."""

    def __init__(self, pool: ChannelPool, monitor: Monitor) -> None:
        self.pool = pool
        self.monitor = monitor
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def follow(self, url: str) -> None:
        if url not in self._tasks:
            self._tasks[url] = asyncio.create_task(self._follow(url), name=f"follow-{url}")

    def _lost(self, event: ConnectionEvent) -> None:
        for remote in event.connections.values():
            if event.type != DELETE and remote.state != DOWN:
                continue
            ids = {segment.id for segment in remote.path.path_segments}
            down = self.monitor.mark_down(
                lambda c, ids=ids: bool(c.path_ids) and c.path_ids[0] in ids  # type: ignore[misc]
            )
            if down:
                _log.warning("a remote node lost connections", count=len(down))

    async def _follow(self, url: str) -> None:
        pauses = delays(1_000_000, 0.1, 2.0)
        while True:
            stub = connection_pb2_grpc.MonitorConnectionStub(self.pool.get(url))
            try:
                async for event in stub.MonitorConnections(MonitorScopeSelector()):
                    self._lost(event)
            except grpc.aio.AioRpcError as exc:
                _log.info("remote monitor stream broke", url=url, code=exc.code().name)
            await asyncio.sleep(next(pauses))  # back-off before re-subscribing

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_all(tasks)
