"""Knocking: a tunnel that only this side can open keeps initiating until the far side answers.

When the far side cannot dial this node (this node is behind a masquerading NAT, the far side
in another site), only this side's handshake opens the tunnel. Its first initiation can arrive
before the far side's tunnel exists (the endpoint side programs its end before the client side
does) and is lost; WireGuard itself tries again only after 5 s (REKEY_TIMEOUT), while clients
probe the data plane within about a second. :class:`Knocker` therefore re-adds the peer — a
fresh peer sends a new initiation at once — every :data:`KNOCK_INTERVAL` seconds until the
peer's counters show a handshake, for at most :data:`KNOCK_FOR` seconds.

Contract: :meth:`Knocker.start` (one knocking task per connection key, replacing an earlier
one), :meth:`Knocker.cancel` when the vWire is replaced or closed, :meth:`Knocker.stop` cancels
all. A backend error ends the knocking quietly (the vWire's own checks report broken tunnels).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from forwarder.wireguard import WgPeer, WireGuardBackend
from sdk.aio import cancel_all
from sdk.errors import FabricError

KNOCK_INTERVAL = 0.25
KNOCK_FOR = 6.0
_log = structlog.get_logger("forwarder.knock")


class Knocker:
    """See the module docstring."""

    def __init__(self, backend: WireGuardBackend, interval: float = KNOCK_INTERVAL,
                 duration: float = KNOCK_FOR) -> None:
        self.backend = backend
        self.interval = interval
        self.duration = duration
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, key: str, wg_name: str, peer: WgPeer) -> None:
        self.cancel(key)
        task = asyncio.create_task(self._knock(wg_name, peer))
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    def cancel(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_all(tasks)

    async def _answered(self, wg_name: str, peer: WgPeer) -> bool:
        return any(s.public_key == peer.public_key and s.last_handshake is not None
                   for s in await self.backend.stats(wg_name))

    async def _knock(self, wg_name: str, peer: WgPeer) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duration
        knocks = 0
        with contextlib.suppress(FabricError):
            while loop.time() < deadline:
                await asyncio.sleep(self.interval)  # the retry period, bounded by the deadline
                if await self._answered(wg_name, peer):
                    _log.info("tunnel opened", ifname=wg_name, knocks=knocks)
                    return
                await self.backend.remove_peer(wg_name, peer.public_key)
                await self.backend.set_peer(wg_name, peer)
                knocks += 1
            _log.warning("the far side did not answer our handshakes", ifname=wg_name,
                         seconds=self.duration)
