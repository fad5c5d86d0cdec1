"""Recovery of remote vWires after their wireguard-go daemon restarts.

When a wireguard-go daemon dies, :class:`forwarder.wireguard.UserspaceBackend` restarts it,
re-applies key, port and peers and moves the new TUN back into the workload's namespace, but the
link comes back under its creation name, DOWN, with the default MTU and no alias, addresses or
routes. This module restores the rest.

Contract:

* :class:`LiveVWires` is the registry of this forwarder's live remote vWires, keyed by WireGuard
  interface name (the name the backend's events carry, see :func:`wireguard_name`). Xconnect adds
  a vWire once it is programmed and forgets it before closing or replacing it.
* :class:`RestartRecovery` subscribes to the backend's events (:meth:`RestartRecovery.attach`).
  ``restarted`` → :func:`restore` the registered vWire in a task: the link takes the
  workload's interface name back, its marker and MTU and comes up (one call), then addresses
  and routes exactly as :func:`forwarder.vwire.program_remote` planned them.
  ``restart_failed`` → the vWire is lost: an error is logged, the vWire leaves the registry
  and its ``on_lost`` callback runs (Xconnect then rebuilds the vWire on the connection's next
  request). Events for unknown interfaces are ignored.
* A restore that fails, and a restart beyond ``max_restarts`` within ``window`` seconds of the
  same vWire (its daemon keeps ending), make the vWire lost the same way instead of restoring it
  again: restarts of one vWire are bounded, each loss is reported with its reason, and the
  connection's next request rebuilds the vWire. A vWire closed or replaced meanwhile is dropped
  quietly. Nothing raises into the backend. :meth:`RestartRecovery.close` unsubscribes and
  cancels restores in flight, leaving no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from forwarder.kernel import KernelPort
from forwarder.vwire import RemoteVWireSpec, VWire
from forwarder.vwire import validate as vwire_validate
from forwarder.vwire.attach import apply_end, plan_end
from forwarder.vwire.naming import marker, parse_marker
from forwarder.vwire.remote import ROLE
from forwarder.wireguard import WgProcessEvent
from sdk.errors import DataplaneError, FabricError

_log = structlog.get_logger("forwarder.restart")


@dataclass(frozen=True)
class LiveVWire:
    """A programmed remote vWire, what it was programmed from, and what to do when it is lost."""

    vwire: VWire
    spec: RemoteVWireSpec
    on_lost: Callable[[], None]


class LiveVWires:
    """Live remote vWires by WireGuard interface name (see module docstring)."""

    def __init__(self) -> None:
        self._by_wg: dict[str, LiveVWire] = {}

    def __len__(self) -> int:
        return len(self._by_wg)

    def add(self, wg_name: str, entry: LiveVWire) -> None:
        """Register ``entry`` under ``wg_name`` (replacing a previous entry of that name)."""
        self._by_wg[wg_name] = entry

    def names(self) -> list[str]:
        """The registered WireGuard interface names, sorted."""
        return sorted(self._by_wg)

    def get(self, wg_name: str) -> LiveVWire | None:
        """The entry of ``wg_name``, or None."""
        return self._by_wg.get(wg_name)

    def forget(self, vwire: VWire) -> None:
        """Drop every entry of ``vwire`` (no error when there is none)."""
        for name in [n for n, e in self._by_wg.items() if e.vwire is vwire]:
            del self._by_wg[name]

    def pop(self, wg_name: str) -> LiveVWire | None:
        """Remove and return the entry of ``wg_name``."""
        return self._by_wg.pop(wg_name, None)


async def wireguard_name(kernel: KernelPort, vwire: VWire) -> str | None:
    """The WireGuard interface name of a remote vWire, read from its ownership marker."""
    end = vwire.ends[0]
    link = await kernel.get_link(end.netns, end.ifname)
    found = parse_marker(link.alias)
    return None if found is None else found.wg_name


async def restore(kernel: KernelPort, wg_name: str, entry: LiveVWire) -> None:
    """Re-apply what a restarted daemon's fresh link lacks (see module docstring)."""
    vwire, spec = entry.vwire, entry.spec
    end = vwire.ends[0]
    if end.netns is None:  # program_remote always resolves the workload's namespace to a path
        raise DataplaneError(f"vwire {vwire.connection_id} has no workload namespace")
    peers = [
        vwire_validate.interface_cidr(a, f"peer.addresses[{i}]")
        for i, a in enumerate(spec.peer.addresses)
    ]
    plan = plan_end(ROLE, spec.workload, end.netns, end.ifname, peers, point_to_point=True)
    await apply_end(kernel, plan, mtu=vwire.mtu, alias=marker(vwire.connection_id, wg_name),
                    rename_from=wg_name)


class Subscribable(Protocol):
    """A backend that publishes :class:`WgProcessEvent` (the wireguard-go backend does)."""

    def subscribe(self, callback: Callable[[WgProcessEvent], None]) -> Callable[[], None]: ...


class RestartRecovery:
    """Turns the backend's process events into restores and losses (see module docstring)."""

    def __init__(
        self, kernel: KernelPort, live: LiveVWires, *, max_restarts: int = 3,
        window: float = 60.0,
    ) -> None:
        self.kernel = kernel
        self.live = live
        self.max_restarts = max_restarts
        self.window = window
        self._restarts: dict[str, list[float]] = {}  # by wg name: recent restart times
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.restored = 0  # count of successful restores (for tests and status)
        self.lost = 0  # count of vWires given up (for tests and status)

    def attach(self, backend: Subscribable) -> None:
        """Start listening to ``backend``'s events."""
        self._unsubscribe = backend.subscribe(self.on_event)

    def on_event(self, event: WgProcessEvent) -> None:
        """The backend's callback: synchronous, never raises, schedules restores."""
        entry = self.live.get(event.ifname)
        if entry is None:
            return
        cid = entry.vwire.connection_id
        if event.kind == "restarted":
            if self._too_often(event.ifname):
                self._lose(event.ifname, entry, f"its wireguard-go ended more than "
                           f"{self.max_restarts} times within {self.window:.0f} s")
                return
            task = asyncio.get_running_loop().create_task(
                self._restore(event.ifname, entry), name=f"vwire-restore-{event.ifname}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif event.kind == "restart_failed":
            self._lose(event.ifname, entry,
                       f"wireguard-go could not be restarted: {event.detail}")
        else:
            _log.warning("wireguard-go exited, waiting for its restart", connection_id=cid,
                         ifname=event.ifname, returncode=event.returncode, detail=event.detail)

    def _too_often(self, wg_name: str) -> bool:
        """Count a restart of ``wg_name``; True past ``max_restarts`` within ``window``."""
        now = asyncio.get_running_loop().time()
        recent = [t for t in self._restarts.get(wg_name, []) if now - t < self.window]
        # Names restarted last more than a window ago are forgotten (closed vWires' too).
        self._restarts = {n: ts for n, ts in self._restarts.items() if now - ts[-1] < self.window}
        self._restarts[wg_name] = [*recent, now]
        return len(recent) + 1 > self.max_restarts

    def _lose(self, wg_name: str, entry: LiveVWire, reason: str) -> None:
        """Give the vWire up (module docstring), unless it was closed or replaced meanwhile."""
        if self.live.get(wg_name) is not entry:
            return
        self.live.pop(wg_name)
        self._restarts.pop(wg_name, None)
        self.lost += 1
        _log.error("vwire lost: the next request rebuilds it", reason=reason,
                   connection_id=entry.vwire.connection_id, ifname=wg_name)
        entry.on_lost()

    async def _restore(self, wg_name: str, entry: LiveVWire) -> None:
        cid = entry.vwire.connection_id
        if self.live.get(wg_name) is not entry:
            return  # closed or replaced meanwhile
        try:
            await restore(self.kernel, wg_name, entry)
        except FabricError as exc:
            self._lose(wg_name, entry, f"restoring it after a wireguard-go restart failed: {exc}")
            return
        self.restored += 1
        _log.info("vwire restored after a wireguard-go restart", connection_id=cid,
                  ifname=wg_name)

    async def close(self) -> None:
        """Unsubscribe and cancel restores in flight."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
