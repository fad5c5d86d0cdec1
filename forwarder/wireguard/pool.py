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
- With ``namespaces`` > 0, ``take(..., netns=NS)`` (NS: a workload namespace the caller will move
  the TUN into, e.g. the one an endpoint answered with last time) hands out a daemon whose TUN
  was moved into NS ahead (at ``mtu``, seen by the daemon before the move), so the move is off
  the caller's path (:class:`Ready` says where its TUN is); without one ready it answers from
  the underlay's daemons and starts keeping ``size`` ready in NS. At most ``namespaces``
  namespaces are kept, the least recently asked for is dropped first (its daemons stopped); a
  namespace that disappears takes its pooled TUNs with it (the kernel deletes them, their daemons
  end), and the pool stops keeping it. Idle cost: ``size`` x (1 + ``namespaces``) daemons.
- Refilling starts daemons one at a time, at the MTU asked for last (one that was being started
  when the MTU changed is stopped and the refill goes on at the new MTU); a failure is logged
  and retried after a growing pause (at most 5 s), never raised. Pooled daemons claim inotify
  instances like any other.
- Each pooled TUN carries the alias ``vwire-pool:<forwarder pid>``; :meth:`sweep` (the forwarder
  calls it at start, and the first refill of each underlay) deletes pooled TUNs whose pid is gone
  (a crashed forwarder's: deleting the TUN ends its daemon), in the underlay and, with
  ``namespaces`` > 0 or ``sweep_namespaces`` (the backend keeps retired daemons' TUNs there,
  marked alike), in every workload namespace, and unlinks pooled daemons' sockets nobody
  answers on, and those named like the links it deleted once their daemons ended (at most
  ``SOCKET_GRACE`` seconds: a daemon ends with its TUN, a moment after).
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
from sdk.aio import cancel_all
from sdk.errors import FabricError, InvalidArgument, NotFound

from .process import SOCKET_GRACE, WgGoProcess, clear_sockets_of_ending, clear_stale_socket
from .uapi import SOCKET_DIR, socket_path

log = structlog.get_logger()

POOL_ALIAS = "vwire-pool:"
_MAX_PAUSE = 5.0


POOL_PREFIX = "vwp"


def pool_name() -> str:
    """A fresh name for a pooled daemon's TUN (and its UAPI socket)."""
    return f"{POOL_PREFIX}{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Ready:
    """A pooled daemon handed out, and the namespace its TUN is in now (None: the underlay's)."""

    process: WgGoProcess
    netns: str | None


@dataclass(eq=False)
class _Underlay:
    """The daemons kept for one (underlay, namespace of their TUN)."""

    netns: str | None = None
    ready: list[WgGoProcess] = field(default_factory=list)
    mtu: int | None = None
    refill: asyncio.Task[None] | None = None
    swept: bool = False
    gone: bool = False  # its namespace disappeared: no longer kept


_Key = tuple[str | None, str | None]  # (underlay, namespace of the TUNs)


class DevicePool:
    """See the module docstring."""

    def __init__(
        self,
        size: int,
        kernel: KernelPort,
        start: Callable[[str, str | None], WgGoProcess],
        socket_dir: Path = SOCKET_DIR,
        namespaces: int = 0,
        sweep_namespaces: bool = False,
    ) -> None:
        self.size = size
        self.namespaces = namespaces
        self.sweep_namespaces = sweep_namespaces or namespaces > 0
        self.socket_dir = socket_dir
        self.kernel = kernel
        self._start = start  # makes an unstarted WgGoProcess for (ifname, underlay)
        self._underlays: dict[_Key, _Underlay] = {}  # oldest asked for first
        self._stopping: set[asyncio.Task[None]] = set()
        self._watchers: dict[WgGoProcess, asyncio.Task[None]] = {}  # pooled in a namespace
        self._closed = False

    def ready(self, underlay: str | None, netns: str | None = None) -> int:
        """How many daemons of ``underlay`` (with their TUN in ``netns``) are ready now."""
        state = self._underlays.get((underlay, netns))
        return len(state.ready) if state else 0

    def kept(self) -> list[str]:
        """The workload namespaces daemons are kept ready in, oldest asked for first."""
        return [netns for (_, netns) in self._underlays if netns is not None]

    async def filled(self, underlay: str | None, netns: str | None = None) -> None:
        """Wait until the refill of ``underlay`` (``netns``) and the stops of daemons set
        aside, running now (if any), have ended."""
        state = self._underlays.get((underlay, netns))
        if state is not None and state.refill is not None:
            await asyncio.shield(state.refill)
        if self._stopping:
            await asyncio.shield(asyncio.gather(*self._stopping, return_exceptions=True))

    async def take(
        self, underlay: str | None, mtu: int, netns: str | None = None
    ) -> Ready | None:
        """A ready daemon of ``underlay`` at ``mtu``, its TUN in ``netns`` if one is (module
        docstring), or None."""
        if self.size <= 0 or self._closed:
            return None
        if netns is not None and self.namespaces > 0:
            found = self._take((underlay, netns), mtu)
            if found is not None:
                return Ready(found, netns)
        found = self._take((underlay, None), mtu)
        return None if found is None else Ready(found, None)

    def _state(self, key: _Key) -> _Underlay:
        """The state of ``key``, now the most recently asked for; a namespace beyond
        ``namespaces`` is dropped (oldest first) and its daemons stopped."""
        state = self._underlays.pop(key, None) or _Underlay(netns=key[1], swept=key[1] is not None)
        self._underlays[key] = state
        kept = [k for k in self._underlays if k[1] is not None]
        for old in kept[: max(0, len(kept) - self.namespaces)]:
            self._drop(old)
        return state

    def _drop(self, key: _Key) -> None:
        state = self._underlays.pop(key)
        state.gone = True
        if state.refill is not None:
            state.refill.cancel()
        self._stop_behind(state.ready)
        state.ready = []

    def _stop_behind(self, processes: list[WgGoProcess]) -> None:
        """Stop ``processes`` behind the caller, which does not wait for them."""
        if processes:
            self._stopping.add(asyncio.create_task(_stop_all(processes)))
            self._stopping = {task for task in self._stopping if not task.done()}

    def _take(self, key: _Key, mtu: int) -> WgGoProcess | None:
        underlay = key[0]
        state = self._state(key)
        if state.mtu != mtu:
            stale, state.ready, state.mtu = state.ready, [], mtu
            self._stop_behind(stale)
        found = None
        dead = []
        while state.ready and found is None:
            process = state.ready.pop()
            watcher = self._watchers.pop(process, None)
            if watcher is not None:
                watcher.cancel()
            if process.returncode is None:
                found = process
            else:  # its namespace went away (or it died): reap it, unlink its socket
                dead.append(process)
        self._stop_behind(dead)
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
        while self._wanted(state):
            mtu = state.mtu
            assert mtu is not None
            try:
                process = await self._prepare(underlay, mtu, state.netns)
            except FabricError as exc:
                if state.netns is not None and not os.path.exists(state.netns):
                    self._underlays.pop((underlay, state.netns), None)  # gone: keep it no more
                    state.gone = True
                    return
                log.warning("wireguard_pool_start_failed", underlay=underlay, error=str(exc))
                await asyncio.sleep(pause)  # back off before the next attempt
                pause = min(pause * 2, _MAX_PAUSE)
                continue
            if not self._wanted(state, mtu):
                await process.stop()  # the MTU changed meanwhile: the loop goes on at the new one
                continue
            state.ready.append(process)
            if state.netns is not None:
                self._watchers[process] = asyncio.create_task(
                    self._watch(underlay, state, process), name=f"wg-pool-{process.ifname}")

    async def _watch(self, underlay: str | None, state: _Underlay, process: WgGoProcess) -> None:
        """A pooled daemon whose TUN is in a namespace ends when the namespace goes: reap it
        and stop keeping that namespace (or replace the daemon, if it ended otherwise)."""
        await process.wait()
        self._watchers.pop(process, None)
        if process in state.ready:
            state.ready.remove(process)
        await process.stop()  # unlinks its socket
        if state.netns is not None and not os.path.exists(state.netns):
            if self._underlays.get((underlay, state.netns)) is state:
                self._drop((underlay, state.netns))
            log.info("wireguard_pool_namespace_gone", netns=state.netns)
        elif not state.gone:
            self._refill(underlay, state)

    def _wanted(self, state: _Underlay, mtu: int | None = None) -> bool:
        """Whether ``state`` needs another daemon (one made at ``mtu``, if given)."""
        return (not self._closed and not state.gone and len(state.ready) < self.size
                and state.mtu is not None and mtu in (None, state.mtu))

    async def _prepare(self, underlay: str | None, mtu: int, netns: str | None) -> WgGoProcess:
        process = self._start(pool_name(), underlay)
        await process.start()
        try:
            await self.kernel.set_link(underlay, process.ifname, mtu=mtu,
                                       alias=f"{POOL_ALIAS}{os.getpid()}")
            if not await process.wait_mtu(mtu):
                raise NotFound(f"wireguard-go {process.ifname} did not report MTU {mtu}")
            if netns is not None:
                await self.kernel.move_link(underlay, process.ifname, netns)
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
        places: list[str | None] = [underlay]
        if self.sweep_namespaces:  # pooled or retired TUNs may be in workload namespaces
            with contextlib.suppress(FabricError):
                places += await self.kernel.list_namespaces()
        for netns in dict.fromkeys(places):
            removed += await self._sweep_in(netns)
        for sock in await clear_sockets_of_ending(
                [socket_path(name, self.socket_dir) for name in removed], SOCKET_GRACE):
            log.warning("wireguard_pool_socket_live", socket=str(sock))
        if removed:
            log.info("wireguard_pool_leftovers_removed", underlay=underlay, links=removed)
        return removed

    async def _sweep_in(self, netns: str | None) -> list[str]:
        removed = []
        # NotFound/InvalidArgument: a namespace listed a moment ago that is gone or being
        # deleted (unmounted, its file not yet unlinked) holds no pooled TUN any more
        with contextlib.suppress(NotFound, InvalidArgument):
            for link in await self.kernel.list_links(netns, alias_prefix=POOL_ALIAS):
                pid = (link.alias or "").removeprefix(POOL_ALIAS)
                if pid.isdigit() and (int(pid) == os.getpid() or os.path.exists(f"/proc/{pid}")):
                    continue
                with contextlib.suppress(NotFound):
                    await self.kernel.delete_link(netns, link.name)
                removed.append(link.name)
        return removed

    async def close(self) -> None:
        """Stop refilling and stop every pooled daemon."""
        self._closed = True
        await cancel_all(list(self._watchers.values()))
        self._watchers.clear()
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
