"""Liveness of local peers (forwarders, endpoints) from their gRPC connections.

Contract of :class:`PeerWatch`: ``watch(key, url, on_dead)`` connects to the peer and, once the
connection was up, calls ``on_dead(key)`` (once) as soon as it drops and cannot be re-established
at once — a process that exits closes its socket, so this takes milliseconds, not a timeout.
A peer that never came up is reported after ``connect_timeout``. ``unwatch`` and ``close`` stop
watching without calling anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import structlog

from sdk.aio import cancel_all
from sdk.channels import ChannelPool

_log = structlog.get_logger("nsmgr.watchdog")

_BAD = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


class PeerWatch:
    """See the module docstring."""

    def __init__(self, pool: ChannelPool, connect_timeout: float = 5.0) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, key: str, url: str, on_dead: Callable[[str], None]) -> None:
        self.unwatch(key)
        self._tasks[key] = asyncio.create_task(self._run(key, url, on_dead), name=f"watch-{key}")

    def unwatch(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_all(tasks)

    async def _run(self, key: str, url: str, on_dead: Callable[[str], None]) -> None:
        channel = self.pool.get(url)
        try:
            await asyncio.wait_for(channel.channel_ready(), self.connect_timeout)
        except TimeoutError:
            _log.warning("peer did not come up", peer=key, url=url)
            self._tasks.pop(key, None)
            on_dead(key)
            return
        state = channel.get_state()
        while True:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.IDLE:
                continue  # an idle channel reconnects on the next get_state(True)
            if state in _BAD:
                _log.warning("peer is gone", peer=key, url=url)
                self._tasks.pop(key, None)
                on_dead(key)
                return
