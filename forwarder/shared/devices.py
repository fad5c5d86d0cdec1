"""The shared WireGuard devices of one forwarder and the namespace they live in.

Where the kernel has no WireGuard, every remote vWire costs a wireguard-go daemon per side. In
shared mode a forwarder keeps one device per (other node, address space) instead, and the
connections between the two nodes are told apart by policy routing (see
:mod:`forwarder.shared.vwire` and :mod:`forwarder.shared.spaces`).

Contract of :class:`SharedDevices` (one per forwarder process):

* :meth:`start` makes the devices' namespace, held by this process alone (no name, no mount:
  ``/proc/<pid>/fd/<n>``, e.g. for ``nsenter --net=``; the forwarder logs it and shows it as
  its ``shared-namespace`` label, ``proc-<pid>-fd-<n>``), with forwarding on and reverse-path
  filtering off: the routing rules decide what may pass, and nothing else lives there (no
  address but loopback, not even IPv6 link-local ones; no route out). :meth:`stop` deletes the
  devices and lets go of the namespace; a forwarder that dies takes it along, and the kernel
  removes every device and veth pair in it, so no run leaves anything for the next to sweep.
* One node key pair per process: its public half is offered in the WIREGUARD mechanism
  (``vwire_src_shared_key``) and answered as the shared device's ``dst_public_key``.
* :meth:`reserve` (synchronous, so two setups never pick a space at once) puts a connection in
  a space: the one the far side chose, refused with ``FailedPrecondition`` when it clashes
  here, or the lowest free one (:func:`forwarder.shared.spaces.choose_space`).
* :meth:`join` makes sure the device of the connection's (peer, space) runs — created in the
  underlay (its UDP socket stays there) with the node key, a port from the forwarder's range
  and the path's tunnel MTU, marked, moved into the namespace and brought up — and sets its one
  peer: the other node's key, the endpoint last learnt (None: the other node dials), keepalive,
  and as allowed IPs the far prefixes of every connection in it (a connection joining a running
  device with a known peer only adds its own, so a join does not grow with the connections
  already there). Calls on one device are serialised; a failed creation leaves no device and no
  port taken.
* :meth:`leave` takes a connection out: the peer's allowed IPs shrink; after the last one out
  the device idles ``linger`` seconds (30; a connection that joins meanwhile takes it over
  without a new daemon, so connections made one after the other do not each start one), then
  stops and frees its port. It is idempotent.
* Each connection gets its own routing table (:meth:`table`), freed by :meth:`leave`.
* :meth:`peer_stats` reads a device's peer statistics for the vWires' metrics at most once a
  second (:data:`STATS_TTL`): the reading lists every allowed prefix of every connection
  through the device, so reading it for each reply made setups slower as connections grew.
  Callers that ask while a reading is under way share it; a failed reading is not kept.
* With :meth:`watch` on a wireguard-go backend, a device whose daemon was restarted is brought
  back (MTU, marker, up, and every connection's routes through it, kept by :meth:`add_routes`;
  the rules name the device and match again by themselves); one that could not be restarted
  makes each of its connections lost (their ``on_lost`` callbacks run once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from forwarder.kernel import KernelPort, Route
from forwarder.ports import PortPool
from forwarder.vwire.naming import marker
from forwarder.wireguard import (
    WgPeer,
    WgPeerStats,
    WgProcessEvent,
    WireGuardBackend,
    generate_keypair,
)
from forwarder.wireguard.keys import parse_private_key
from sdk.errors import AlreadyExists, FabricError, FailedPrecondition

from .spaces import Selectors, choose_space, clash

_log = structlog.get_logger("forwarder.shared")
FIRST_TABLE = 1000
MAX_SPACES = 64  # device pairs between two nodes: a far side's choice beyond is refused
LINGER = 30.0  # seconds a device without connections keeps running
STATS_TTL = 1.0  # seconds one reading of a device's peer statistics serves its vWires
#: inside the shared namespace: route between the devices and the veth ends, by our rules only
SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    # no address at all, IPv6 link-local ones included: nothing in it can be reached, not even
    # by a workload pinging the node end of its own veth
    "net.ipv6.conf.default.addr_gen_mode": "1",
}


@dataclass
class _Member:
    selectors: Selectors
    on_lost: Callable[[], None] | None
    routes: list[Route] = field(default_factory=list)  # through the device, in its table


@dataclass
class SharedDevice:
    """One running shared device: its WireGuard name, port, MTU and peer."""

    peer_key: str
    space: int
    wg_name: str
    port: int
    mtu: int
    endpoint: tuple[str, int] | None = None
    keepalive: int | None = None
    members: dict[str, _Member] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    running: bool = False
    idle: asyncio.TimerHandle | None = None  # its stop, after the last connection left


class SharedDevices:
    """See the module docstring."""

    def __init__(
        self, kernel: KernelPort, backend: WireGuardBackend, ports: PortPool, forwarder: str,
        underlay_netns: str | None = None, *, linger: float = LINGER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kernel = kernel
        self.linger = linger
        self.backend = backend
        self.ports = ports
        self.forwarder = forwarder
        self.underlay_netns = underlay_netns
        self.private_key, self.public_key = generate_keypair()
        self.netns = ""  # set by start()
        self._devices: dict[tuple[str, int], SharedDevice] = {}
        self._tables: dict[str, int] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock = clock
        #: by device name: when its last reading of peer statistics started, and that reading
        self._readings: dict[str, tuple[float, asyncio.Future[list[WgPeerStats]]]] = {}

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the namespace of the devices (module docstring)."""
        self.netns = await self.kernel.create_namespace(SYSCTLS)

    async def stop(self) -> None:
        """Stop every device and delete the namespace (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for device in self._devices.values():
            if device.idle is not None:
                device.idle.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for device in list(self._devices.values()):
            with contextlib.suppress(FabricError):
                await self.backend.delete(device.wg_name)
            self.ports.give_back(self._port_owner(device))
        self._devices.clear()
        if self.netns:
            await self.kernel.delete_namespace(self.netns)
            self.netns = ""

    # -- connections -------------------------------------------------------------------------

    def reserve(
        self, peer_key: str, space: int | None, cid: str, selectors: Selectors,
        on_lost: Callable[[], None] | None = None,
    ) -> int:
        """Put connection ``cid`` in a space of the devices to ``peer_key`` (module docstring)."""
        members = {
            s: [m.selectors for c, m in d.members.items() if c != cid]
            for (key, s), d in self._devices.items() if key == peer_key
        }
        if space is None:
            space = choose_space(members, selectors)
            if space >= MAX_SPACES:
                raise FailedPrecondition(
                    f"connection {cid} would need address space {space}: {MAX_SPACES} device "
                    "pairs to this node already carry connections with the same addresses; use "
                    "endpoints with distinct address pools")
        elif any(clash(selectors, other) for other in members.get(space, [])):
            raise FailedPrecondition(
                f"the other node put connection {cid} in address space {space}, where its "
                "addresses clash with another connection's on this node; close one of them"
            )
        device = self._devices.get((peer_key, space))
        if device is None:
            device = SharedDevice(peer_key, space, self._wg_name(peer_key, space), 0, 0)
            self._devices[(peer_key, space)] = device
        device.members[cid] = _Member(selectors, on_lost)
        return space

    async def join(
        self, peer_key: str, space: int, cid: str, endpoint: tuple[str, int] | None,
        keepalive: int | None, mtu: int,
    ) -> SharedDevice:
        """Run the device of (``peer_key``, ``space``) and set its peer (module docstring)."""
        device = self._devices[(peer_key, space)]
        if device.idle is not None:
            device.idle.cancel()
            device.idle = None
        async with device.lock:
            made = not device.running
            if made:
                await self._create(device, mtu)
            changed = ((endpoint is not None and endpoint != device.endpoint)
                       or bool(keepalive and keepalive != device.keepalive))
            device.endpoint = endpoint or device.endpoint
            device.keepalive = keepalive or device.keepalive
            member = device.members.get(cid)
            if made or changed or member is None:
                await self._set_peer(device)
            else:  # the others' stay: a join costs the same however many share the device
                await self.backend.add_allowed_ips(
                    device.wg_name, device.peer_key, tuple(str(p) for p in member.selectors.far))
        return device

    def add_routes(self, peer_key: str, space: int, cid: str, routes: Iterable[Route]) -> None:
        """Remember the routes through the device that ``cid`` added (restored after a
        restart of its daemon)."""
        device = self._devices.get((peer_key, space))
        if device is not None and cid in device.members:
            device.members[cid].routes.extend(routes)

    async def leave(self, peer_key: str, space: int, cid: str) -> None:
        """Take ``cid`` out of its device; after the last one out the device idles for
        ``linger`` seconds, then stops (idempotent)."""
        device = self._devices.get((peer_key, space))
        if device is None or device.members.pop(cid, None) is None:
            return
        async with device.lock:
            if device.running and (device.members or self.linger > 0):
                await self._set_peer(device)
        if not device.members:
            if self.linger > 0 and device.running:
                device.idle = asyncio.get_running_loop().call_later(
                    self.linger, lambda: self._spawn(self._retire(device)))
            else:
                await self._retire(device)

    async def _retire(self, device: SharedDevice) -> None:
        """Stop ``device`` unless a connection joined it meanwhile."""
        async with device.lock:
            if device.members:
                return
            if device.running:  # a connection that joins meanwhile makes it again
                device.running = False
                try:
                    await self.backend.delete(device.wg_name)
                finally:
                    self.ports.give_back(self._port_owner(device))
            key = (device.peer_key, device.space)
            if not device.members and self._devices.get(key) is device:
                del self._devices[key]
            self._readings.pop(device.wg_name, None)
            _log.info("shared device stopped", wireguard=device.wg_name, space=device.space)

    async def peer_stats(self, device: SharedDevice) -> list[WgPeerStats]:
        """The peer statistics of ``device``, read at most once per :data:`STATS_TTL`
        (module docstring)."""
        now = self._clock()
        kept = self._readings.get(device.wg_name)
        if kept is not None:
            started, reading = kept
            if not reading.done():
                return await asyncio.shield(reading)
            if (now - started < STATS_TTL and not reading.cancelled()
                    and reading.exception() is None):
                return reading.result()
        reading = asyncio.ensure_future(self.backend.stats(device.wg_name))
        self._readings[device.wg_name] = (now, reading)
        reading.add_done_callback(_consumed)
        return await asyncio.shield(reading)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def table(self, cid: str) -> int:
        """The routing table of connection ``cid`` (the same until :meth:`free_table`)."""
        if cid not in self._tables:
            used = set(self._tables.values())
            self._tables[cid] = next(t for t in range(FIRST_TABLE, FIRST_TABLE + len(used) + 1)
                                     if t not in used)
        return self._tables[cid]

    def free_table(self, cid: str) -> None:
        self._tables.pop(cid, None)

    def devices(self) -> list[SharedDevice]:
        """The devices now (running or being made)."""
        return list(self._devices.values())

    # -- internals ---------------------------------------------------------------------------

    def _wg_name(self, peer_key: str, space: int) -> str:
        digest = hashlib.sha256(
            f"{self.forwarder}\0{os.getpid()}\0{peer_key}\0{space}".encode()).hexdigest()
        return f"vws{digest[:10]}"

    @staticmethod
    def _port_owner(device: SharedDevice) -> str:
        return f"shared:{device.wg_name}"

    async def _create(self, device: SharedDevice, mtu: int) -> None:
        port = self.ports.take(self._port_owner(device))
        try:
            device.port = await self.backend.create(
                device.wg_name, self.underlay_netns, parse_private_key(self.private_key).reveal(),
                port, mtu=mtu)
            try:
                await self.kernel.set_link(self.underlay_netns, device.wg_name, mtu=mtu,
                                           alias=self._marker(device))
                await self.backend.move(device.wg_name, self.underlay_netns, self.netns)
                await self.kernel.set_link(self.netns, device.wg_name, up=True)
            except BaseException:
                await self.backend.delete(device.wg_name)
                raise
        except BaseException:
            self.ports.give_back(self._port_owner(device))
            raise
        device.mtu, device.running = mtu, True
        _log.info("shared device started", wireguard=device.wg_name, space=device.space,
                  port=device.port, mtu=mtu)

    def _marker(self, device: SharedDevice) -> str:
        return marker(f"{self.forwarder}/shared/{device.space}", device.wg_name)

    async def _set_peer(self, device: SharedDevice) -> None:
        allowed = [str(p) for m in device.members.values() for p in m.selectors.far]
        await self.backend.set_peer(device.wg_name, WgPeer(
            public_key=device.peer_key, endpoint=device.endpoint,
            allowed_ips=tuple(dict.fromkeys(allowed)), keepalive=device.keepalive))

    # -- daemon restarts ---------------------------------------------------------------------

    def watch(self, subscribe: Callable[[Callable[[WgProcessEvent], None]],
                                        Callable[[], None]]) -> None:
        """Follow the backend's daemon events (wireguard-go only)."""
        self._unsubscribe = subscribe(self._on_event)

    def _on_event(self, event: WgProcessEvent) -> None:
        device = next((d for d in self._devices.values() if d.wg_name == event.ifname), None)
        if device is None or not device.running:
            return
        if event.kind == "restarted":
            self._spawn(self._restore(device))
        elif event.kind == "restart_failed":
            self._lose(device, event.detail or "its daemon could not be restarted")

    async def _restore(self, device: SharedDevice) -> None:
        try:
            async with device.lock:
                await self.kernel.set_link(self.netns, device.wg_name, mtu=device.mtu,
                                           alias=self._marker(device), up=True)
                for member in list(device.members.values()):
                    for route in member.routes:
                        with contextlib.suppress(AlreadyExists):  # put back already
                            await self.kernel.add_route(self.netns, route)
            _log.info("shared device restored", wireguard=device.wg_name,
                      connections=len(device.members))
        except FabricError as err:
            self._lose(device, f"restoring it failed: {err}")

    def _lose(self, device: SharedDevice, reason: str) -> None:
        _log.error("shared device lost", wireguard=device.wg_name, reason=reason,
                   connections=len(device.members))
        for member in list(device.members.values()):
            if member.on_lost is not None:
                member.on_lost()
                member.on_lost = None


def _consumed(reading: asyncio.Future[Any]) -> None:
    """Mark a failed reading's error as retrieved: its askers may all have been cancelled."""
    if not reading.cancelled():
        reading.exception()
