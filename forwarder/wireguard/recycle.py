"""Devices of closed vWires, kept a while for the next vWire of the same place.

Starting a wireguard-go daemon (exec, Go runtime, TUN, UAPI socket) costs about 3.5 ms of CPU
here, a tenth of a whole setup. An endpoint's namespace takes one vWire after another, so the
daemon of one that closed, wiped and its TUN left down in that namespace
(:meth:`forwarder.wireguard.userspace.UserspaceBackend.retire`), can serve the next one.

Contract of :class:`IdleDevices` (the items are opaque to it):

- :meth:`put` keeps an item under a key (for the backend: underlay, namespace, MTU). At most
  ``keep`` items are kept in all; putting one more hands the one kept longest to ``stop``. With
  ``keep`` 0, or after :meth:`close`, :meth:`wants` is False and nothing is kept.
- An item is kept at most ``idle`` seconds, then handed to ``stop``: one timer task, running
  only while something is kept.
- :meth:`take` removes and returns an item kept under a key: the one ``prefer`` picks if any,
  else the one put last. :meth:`remove` forgets an item (its daemon ended on its own).
- ``stop`` runs in tasks of their own, so neither :meth:`put` nor the timer waits for it; a
  failure there is logged. :meth:`close` hands every item to ``stop`` and waits for all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger()

T = TypeVar("T")


@dataclass(eq=False)
class _Kept(Generic[T]):
    key: Hashable
    item: T
    until: float  # loop time at which it is stopped


class IdleDevices(Generic[T]):
    """See the module docstring."""

    def __init__(self, keep: int, idle: float, stop: Callable[[T], Awaitable[None]]) -> None:
        self.keep = keep
        self.idle = idle
        self._stop = stop
        self._kept: list[_Kept[T]] = []  # put first, first
        self._timer: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._kept)

    def items(self) -> list[T]:
        """What is kept now, put first first."""
        return [kept.item for kept in self._kept]

    def wants(self) -> bool:
        """Whether :meth:`put` would keep an item."""
        return self.keep > 0 and not self._closed

    def put(self, key: Hashable, item: T) -> None:
        """Keep ``item`` under ``key`` (see the module docstring)."""
        if not self.wants():
            self._stop_behind(item)
            return
        self._kept.append(_Kept(key, item, asyncio.get_running_loop().time() + self.idle))
        while len(self._kept) > self.keep:
            self._stop_behind(self._kept.pop(0).item)
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._expire(), name="wg-idle-devices")

    def take(self, key: Hashable, prefer: Callable[[T], bool] | None = None) -> T | None:
        """An item kept under ``key``, no longer kept: the one ``prefer`` picks, else the last
        put; None if there is none."""
        mine = [kept for kept in self._kept if kept.key == key]
        if not mine:
            return None
        chosen = next((kept for kept in mine if prefer is not None and prefer(kept.item)),
                      mine[-1])
        self._kept.remove(chosen)
        return chosen.item

    def remove(self, item: T) -> bool:
        """Forget ``item`` (not stopped); whether it was kept."""
        for kept in self._kept:
            if kept.item is item:
                self._kept.remove(kept)
                return True
        return False

    async def stopped(self) -> None:
        """Wait until the items handed to ``stop`` so far are stopped."""
        while self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def close(self) -> None:
        """Keep nothing more; stop every item kept and wait for every stop."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        kept, self._kept = self._kept, []
        for entry in kept:
            self._stop_behind(entry.item)
        await self.stopped()

    def _stop_behind(self, item: T) -> None:
        task = asyncio.create_task(self._stop_logged(item), name="wg-idle-stop")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_logged(self, item: T) -> None:
        try:
            await self._stop(item)
        except Exception:
            log.exception("wireguard_idle_stop_failed")

    async def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        while self._kept:
            wait = self._kept[0].until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._stop_behind(self._kept.pop(0).item)
