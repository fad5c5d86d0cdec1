"""wireguard-go daemons started ahead of need, so a vWire does not wait for one to start.

Starting a daemon (exec, Go runtime, TUN, UAPI socket) is the slowest part of a vWire's
programming that the forwarder controls: 5 ms on an idle machine, tens of ms under load. A
:class:`DevicePool` keeps ``size`` daemons per underlay namespace started, their TUN down and
unconfigured (no key, no port bound), named ``vwp<6 hex>``, with the MTU the last vWire asked for
already set and seen by the daemon (it reads the MTU by the name it started with, so a pooled
TUN is renamed only once its MTU is right: see :meth:`WgGoProcess.wait_mtu`).

Contract:

- :meth:`take` hands out a ready daemon of ``underlay`` whose MTU is ``mtu``, or None (none
  ready, or ready ones have another MTU: those are stopped and the pool refills at the new MTU);
  every take schedules a refill in the background. The caller owns the daemon from then on.
- Refilling starts daemons one at a time; a failure is logged and retried after a growing pause
  (at most 5 s), never raised. Pooled daemons claim inotify instances like any other.
- Each pooled TUN carries the alias ``vwire-pool:<forwarder pid>``; :meth:`sweep` (the forwarder
  calls it at start, and the first refill of each underlay) deletes pooled TUNs whose pid is gone
  (a crashed forwarder's: deleting the TUN ends its daemon) and unlinks pooled daemons' sockets
  nobody answers on.
- :meth:`close` stops the refills and every daemon still pooled. ``size`` 0 disables the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from forwarder.kernel import KernelPort
from sdk.errors import FabricError, NotFound

from .process import WgGoProcess, clear_stale_socket
from .uapi import SOCKET_DIR

log = structlog.get_logger()

POOL_ALIAS = "vwire-pool:"
_MAX_PAUSE = 5.0


POOL_PREFIX = "vwp"


def pool_name() -> str:
    """A fresh name for a pooled daemon's TUN (and its UAPI socket)."""
    return f"{POOL_PREFIX}{secrets.token_hex(3)}"


@dataclass(eq=False)
class _Underlay:
    ready: list[WgGoProcess] = field(default_factory=list)
    mtu: int | None = None
    refill: asyncio.Task[None] | None = None
    swept: bool = False


class DevicePool:
    """See the module docstring."""

    def __init__(
        self,
        size: int,
        kernel: KernelPort,
        start: Callable[[str, str | None], WgGoProcess],
        socket_dir: Path = SOCKET_DIR,
    ) -> None:
        self.size = size
        self.socket_dir = socket_dir
        self.kernel = kernel
        self._start = start  # makes an unstarted WgGoProcess for (ifname, underlay)
        self._underlays: dict[str | None, _Underlay] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    def ready(self, underlay: str | None) -> int:
        """How many daemons of ``underlay`` are ready now."""
        state = self._underlays.get(underlay)
        return len(state.ready) if state else 0

    async def filled(self, underlay: str | None) -> None:
        """Wait until the refill of ``underlay`` and the stops of daemons set aside, running
        now (if any), have ended."""
        state = self._underlays.get(underlay)
        if state is not None and state.refill is not None:
            await asyncio.shield(state.refill)
        if self._stopping:
            await asyncio.shield(asyncio.gather(*self._stopping, return_exceptions=True))

    async def take(self, underlay: str | None, mtu: int) -> WgGoProcess | None:
        """A ready daemon of ``underlay`` at ``mtu`` (module docstring), or None."""
        if self.size <= 0 or self._closed:
            return None
        state = self._underlays.setdefault(underlay, _Underlay())
        if state.mtu != mtu:
            stale, state.ready, state.mtu = state.ready, [], mtu
            if stale:  # stopped behind the request, which does not wait for them
                self._stopping.add(asyncio.create_task(_stop_all(stale)))
                self._stopping = {task for task in self._stopping if not task.done()}
        found = None
        while state.ready and found is None:
            process = state.ready.pop()
            if process.returncode is None:
                found = process
        self._refill(underlay, state)
        return found

    def _refill(self, underlay: str | None, state: _Underlay) -> None:
        if state.refill is None or state.refill.done():
            state.refill = asyncio.create_task(self._fill(underlay, state),
                                               name=f"wg-pool-{underlay}")

    async def _fill(self, underlay: str | None, state: _Underlay) -> None:
        pause = 0.1
        if not state.swept:
            state.swept = True
            await self.sweep(underlay)
        while not self._closed and len(state.ready) < self.size and state.mtu is not None:
            mtu = state.mtu
            try:
                process = await self._prepare(underlay, mtu)
            except FabricError as exc:
                log.warning("wireguard_pool_start_failed", underlay=underlay, error=str(exc))
                await asyncio.sleep(pause)  # back off before the next attempt
                pause = min(pause * 2, _MAX_PAUSE)
                continue
            if self._closed or state.mtu != mtu:
                await process.stop()
            else:
                state.ready.append(process)

    async def _prepare(self, underlay: str | None, mtu: int) -> WgGoProcess:
        process = self._start(pool_name(), underlay)
        await process.start()
        try:
            await self.kernel.set_link(underlay, process.ifname, mtu=mtu,
                                       alias=f"{POOL_ALIAS}{os.getpid()}")
            if not await process.wait_mtu(mtu):
                raise NotFound(f"wireguard-go {process.ifname} did not report MTU {mtu}")
        except BaseException:
            await process.stop()
            raise
        return process

    async def sweep(self, underlay: str | None) -> list[str]:
        """Delete pooled TUNs of forwarders that are gone, and unlink the sockets of pooled
        daemons that died (a daemon whose forwarder was killed dies of SIGPIPE at its next
        output line, leaving its socket); the TUNs' names."""
        for sock in self.socket_dir.glob(f"{POOL_PREFIX}*.sock"):
            clear_stale_socket(sock)  # only sockets nobody answers on
        removed = []
        with contextlib.suppress(NotFound):
            for link in await self.kernel.list_links(underlay, alias_prefix=POOL_ALIAS):
                pid = (link.alias or "").removeprefix(POOL_ALIAS)
                if pid.isdigit() and (int(pid) == os.getpid() or os.path.exists(f"/proc/{pid}")):
                    continue
                with contextlib.suppress(NotFound):
                    await self.kernel.delete_link(underlay, link.name)
                removed.append(link.name)
        if removed:
            log.info("wireguard_pool_leftovers_removed", underlay=underlay, links=removed)
        return removed

    async def close(self) -> None:
        """Stop refilling and stop every pooled daemon."""
        self._closed = True
        for state in self._underlays.values():
            if state.refill is not None:
                state.refill.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.refill
            await _stop_all(state.ready)
            state.ready = []
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
            self._stopping.clear()


async def _stop_all(processes: list[WgGoProcess]) -> None:
    for process in processes:
        await process.stop()
