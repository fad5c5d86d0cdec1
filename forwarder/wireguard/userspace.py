"""The wireguard-go backend: one supervised daemon per interface, configured over UAPI.

Contract:
- ``create`` starts ``wireguard-go -f IFNAME`` in the underlay namespace (so its UDP socket and
  its TUN are born there), sets key and port over UAPI and returns the actual port. On any
  failure the daemon is stopped: nothing is left behind. Each daemon claims an inotify instance
  from ``budget`` first (:mod:`.inotify`): past the limit ``create`` raises
  ``ResourceExhausted`` naming it, before anything runs. With ``pool_size`` > 0 and the vWire's
  ``mtu`` given, ``create`` takes a daemon started ahead (:mod:`.pool`) whose TUN already has
  that MTU, configures it and renames its TUN to ``ifname``; its UAPI socket keeps the name it
  started with (the device remembers it). Without one ready it starts a daemon as before.
  With ``netns`` (the namespace the caller moves the interface into next) and
  ``pool_namespaces`` > 0, the pooled daemon may have its TUN in ``netns`` already, at ``mtu``:
  the interface is then created there and :meth:`move` to ``netns`` does nothing.
- With ``tun_in_netns`` (:data:`TUN_IN_NETNS_VERSIONS` says for which wireguard-go), ``create``
  given ``netns`` and ``mtu`` and no pooled daemon makes the TUN in ``netns`` itself, at ``mtu``
  and marked ``alias``, and hands it to the daemon (``WG_TUN_FD``): no move, so no RTNL held
  through an RCU barrier on the setup's path. The daemon still looks its interface up by name in
  its own namespace (index, MTU), so a persistent TUN of the same name stays DOWN in the underlay
  beside it, at the vWire's MTU and marked too (the "shadow"): the daemon pads packets to that
  MTU, which it resets at start, so the shadow's MTU is set once it runs. ``delete`` removes the
  shadow; a restart makes a new TUN in ``netns`` at the MTU and sets the shadow's again. The TUN's
  file keeps ``netns`` alive while the daemon holds it (a moved TUN's file keeps the underlay's
  instead), so deleting the workload's namespace no longer ends the daemon by itself: every
  :data:`NETNS_POLL` seconds the backend checks that each such ``netns`` path still names the
  namespace it made the TUN in, and stops the daemon of one that does not (gone, or replaced by
  another namespace of that name); the supervisor then goes on as for any exit (restarted where
  the path now leads, else ``restart_failed``), as when a moved TUN dies with its namespace.
- ``move`` moves the TUN link through the kernel port (:mod:`forwarder.kernel`); the daemon
  and its UDP socket stay in the underlay (the "namespace trick"; measured to keep carrying
  traffic, see the privileged tests). It first waits (bounded) until the daemon has seen the
  link's MTU (:meth:`WgGoProcess.wait_mtu`): after the move it cannot, and it would pad packets
  of the largest size beyond the path MTU. A restarted daemon gets the same MTU on its new TUN
  before the TUN moves back.
- ``set_peer``/``remove_peer`` change one peer at a time (never ``replace_peers``); the desired
  configuration (key, actual port, peers, current namespace of the link) is remembered.
- Supervision: a task per interface waits on its daemon. An unexpected exit is logged and
  published as a :class:`WgProcessEvent` to every subscriber (``exited``), the stale socket is
  unlinked and the daemon restarted with key, port and peers re-applied and the link moved back
  to its namespace (``restarted``); addresses, routes and link state are the subscriber's to
  restore. After ``RestartPolicy.max_attempts`` failed attempts it gives up (``restart_failed``).
- ``delete`` is idempotent: stops the daemon (SIGTERM, SIGKILL after a timeout), awaits its
  supervisor, unlinks a stale socket. ``close`` deletes every interface this backend made.
  ``reap`` is for a daemon of a previous run (a killed forwarder's), which ``delete`` cannot
  stop: once its links are deleted it ends with its TUN, and ``reap`` then unlinks its socket.
- ``retire`` (with ``reuse`` > 0, for a TUN made in its workload's namespace) keeps the daemon
  instead: one UAPI set wipes it (all-zero private key, port 0, no peers), one kernel call takes
  its TUN down, removes its addresses (its routes went with the link), renames it ``vwp<6 hex>``
  and marks it ``vwire-pool:<forwarder pid>``, and the shadow is marked so too; its counters then
  are kept as the next vWire's ``baseline``. At most ``reuse`` daemons are kept, each for at
  most ``reuse_idle`` seconds (:mod:`.recycle`), watched like the others: one whose namespace
  path names another namespace now is stopped, one that ends is not restarted and no longer
  kept. A ``create`` into the same namespace at the same MTU takes a kept daemon (the one
  started as ``ifname`` if there is one): one UAPI set (key, port), one rename of its TUN with
  ``alias``, and ``alias`` on its shadow; a kept daemon that fails there is stopped and the
  next one tried, then a new one started. Anything ``retire`` cannot keep, or fails to wipe,
  it deletes.
- A daemon's UAPI socket and shadow keep the name it started as, which a reused or pooled
  daemon's interface no longer has; a restart starts the new daemon under that same name and
  renames its TUN to the interface's. A ``create`` whose name is the socket of a daemon of ours
  serving another vWire starts its daemon under a ``vwp`` name instead (one kept for another
  namespace or MTU is stopped first).
- Interface names are global (the socket directory is shared by all namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from forwarder.kernel import KernelPort, LinkStats, real_kernel
from forwarder.kernel.netns import NsId, ns_id
from sdk.errors import AlreadyExists, DataplaneError, FabricError, NotFound
from sdk.metrics import WIREGUARD_DAEMONS

from .inotify import DEFAULT_BUDGET, InotifyBudget
from .keys import PrivateKey, parse_public_key
from .model import (
    WgPeer,
    WgPeerStats,
    WgProcessEvent,
    validate_create,
    validate_ifname,
    validate_peer,
)
from .netns import check_netns
from .pool import POOL_ALIAS, DevicePool, pool_name
from .process import (
    SOCKET_GRACE,
    WIREGUARD_GO,
    WgGoProcess,
    clear_sockets_of_ending,
    clear_stale_socket,
)
from .recycle import IdleDevices
from .uapi import (
    SOCKET_DIR,
    UapiClient,
    allowed_ip_lines,
    device_lines,
    peer_lines,
    removal_lines,
    socket_path,
    wipe_lines,
)

log = structlog.get_logger()

#: wireguard-go releases verified to run a TUN the forwarder made in another namespace
#: (``tun_in_netns``): they read it with the 4-byte packet information header, as the TUN
#: they make themselves. Later releases make theirs with ``IFF_NO_PI`` and are not verified.
TUN_IN_NETNS_VERSIONS = frozenset({"v0.0.20220316", "0.0.20220316"})
#: Seconds between checks that the namespaces of TUNs made in them are still there.
NETNS_POLL = 0.5
#: Seconds a retired daemon is kept for the next vWire of its namespace.
REUSE_IDLE = 30.0

EventCallback = Callable[[WgProcessEvent], None]


@dataclass(frozen=True)
class RestartPolicy:
    """How hard the supervisor tries: attempt n (from 0) waits ``backoff * 2**(n-1)`` (0 first)."""

    max_attempts: int = 3
    backoff: float = 0.2


@dataclass(eq=False)
class _Device:
    ifname: str
    underlay: str | None
    private_key: PrivateKey
    listen_port: int
    process: WgGoProcess
    netns: str | None  # where the TUN link is now
    peers: dict[str, WgPeer] = field(default_factory=dict)
    mtu: int = 0  # its MTU outside the underlay, set again on restarts (0: in the underlay)
    shadow: bool = False  # TUN made in ``netns``; a shadow named as its daemon in the underlay
    netns_id: NsId | None = None  # identity of ``netns`` when its TUN was made there
    idle_name: str | None = None  # retired: its TUN's name in ``netns`` (None: in use)
    baseline: LinkStats | None = None  # its TUN's counters when its vWire got it (None: 0)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopping: bool = False
    supervisor: asyncio.Task[None] | None = None


def _idle_key(device: _Device) -> tuple[str | None, str | None, int]:
    """Where a retired device can serve again: (underlay, namespace of its TUN, MTU)."""
    return (device.underlay, device.netns, device.mtu)


class UserspaceBackend:
    """:class:`WireGuardBackend` on wireguard-go."""

    kind = "wireguard-go"

    def __init__(
        self,
        *,
        binary: str = WIREGUARD_GO,
        socket_dir: Path = SOCKET_DIR,
        restart: RestartPolicy | None = None,
        kernel: KernelPort | None = None,
        start_timeout: float = 5.0,
        stop_timeout: float = 3.0,
        budget: InotifyBudget = DEFAULT_BUDGET,
        pool_size: int = 0,
        pool_namespaces: int = 0,
        tun_in_netns: bool = False,
        reuse: int = 0,
        reuse_idle: float = REUSE_IDLE,
    ) -> None:
        self.binary = binary
        self.tun_in_netns = tun_in_netns
        self.budget = budget
        self.socket_dir = socket_dir
        self.restart = restart or RestartPolicy()
        self.kernel = kernel or real_kernel()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._devices: dict[str, _Device] = {}
        self._creating: set[str] = set()
        self._subscribers: list[EventCallback] = []
        self.pool = DevicePool(pool_size, self.kernel, self._process, socket_dir,
                               namespaces=pool_namespaces, sweep_namespaces=reuse > 0)
        self.retired: IdleDevices[_Device] = IdleDevices(reuse, reuse_idle, self._stop_idle)
        # len() of a dict or list is atomic: safe from the metrics thread
        WIREGUARD_DAEMONS.labels("serving").set_function(lambda: len(self._devices))
        WIREGUARD_DAEMONS.labels("kept").set_function(lambda: len(self.retired))
        self._netns_watch: asyncio.Task[None] | None = None

    # ---- events ---------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback`` for every process event; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _publish(self, event: WgProcessEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("wireguard_event_callback_failed", ifname=event.ifname)

    # ---- the backend interface ------------------------------------------------------------

    async def create(
        self,
        ifname: str,
        underlay_netns: str | None,
        private_key: str,
        listen_port: int,
        mtu: int | None = None,
        netns: str | None = None,
        alias: str | None = None,
    ) -> int:
        key = validate_create(ifname, underlay_netns, private_key, listen_port)
        if ifname in self._devices or ifname in self._creating:
            raise AlreadyExists(f"ifname: wireguard interface {ifname} already exists")
        holder = self._socket_holder(ifname)  # a daemon of ours started as ifname, kept on
        if holder is not None and holder.idle_name is not None and not (
                mtu is not None and netns is not None
                and _idle_key(holder) == (underlay_netns, netns, mtu)):
            self.retired.remove(holder)  # retired elsewhere: it must not keep the name
            await self._stop_idle(holder)
            holder = None
        if holder is None and not clear_stale_socket(socket_path(ifname, self.socket_dir)):
            raise AlreadyExists(
                f"ifname: a wireguard-go for {ifname} is already running (names are global "
                "across namespaces): pick another name"
            )
        self._creating.add(ifname)  # reserved until registered or failed
        try:
            device = await self._reuse(ifname, underlay_netns, key, listen_port, mtu, netns,
                                       alias)
            if device is None:
                # the name's socket is a daemon's serving another vWire: start under another
                start_as = ifname if holder is None else pool_name()
                device = await self._make(ifname, start_as, underlay_netns, key, listen_port,
                                          mtu, netns, alias)
        finally:
            self._creating.discard(ifname)
        if device.shadow and self._netns_watch is None:
            self._netns_watch = asyncio.create_task(self._watch_namespaces(),
                                                    name="wg-netns-watch")
        self._devices[ifname] = device
        if device.supervisor is None:
            device.supervisor = asyncio.create_task(
                self._supervise(device), name=f"wg-supervisor-{ifname}"
            )
        log.info("wireguard_created", ifname=ifname, backend=self.kind,
                 listen_port=device.listen_port, pooled=device.process.ifname != ifname,
                 reused=device.baseline is not None, netns=device.netns)
        return device.listen_port

    async def _make(
        self, ifname: str, start_as: str, underlay_netns: str | None, key: PrivateKey,
        listen_port: int, mtu: int | None, netns: str | None, alias: str | None,
    ) -> _Device:
        """A device for ``ifname`` from a pooled daemon or a new one (started as
        ``start_as``), configured and its TUN named ``ifname``; nothing is left on failure."""
        ready = None if mtu is None else await self.pool.take(underlay_netns, mtu, netns)
        where = underlay_netns if ready is None or ready.netns is None else ready.netns
        shadow = (ready is None and self.tun_in_netns and mtu is not None
                  and netns is not None and netns != underlay_netns)
        if shadow:
            assert mtu is not None and netns is not None
            process = await self._start_in(start_as, underlay_netns, netns, mtu, alias)
            where = netns
        elif ready is None:
            process = self._process(start_as, underlay_netns)
            await process.start()
        else:
            process = ready.process
        try:
            port = await self._configure(process.ifname, key, listen_port, [])
            if process.ifname != ifname:  # pooled, or started as another: its TUN's name now
                await self.kernel.set_link(where, process.ifname, new_name=ifname, alias=alias)
        except BaseException:
            await process.stop()
            if shadow:
                await self._remove_shadow(underlay_netns, process.ifname)
            raise
        device = _Device(ifname, underlay_netns, key, port, process, where, shadow=shadow,
                         netns_id=ns_id(where) if shadow and where else None)
        if where != underlay_netns:  # pooled there or made there, at this MTU (restarts too)
            device.mtu = mtu or 0
        return device

    async def _reuse(
        self, ifname: str, underlay_netns: str | None, key: PrivateKey, listen_port: int,
        mtu: int | None, netns: str | None, alias: str | None,
    ) -> _Device | None:
        """A retired device of ``netns`` at ``mtu``, configured and its TUN named ``ifname``
        (the one whose daemon was started as ``ifname`` if there is one); None if there is
        none that works (one that fails is stopped)."""
        if mtu is None or netns is None:
            return None
        where = (underlay_netns, netns, mtu)
        while (device := self.retired.take(where, lambda d: d.process.ifname == ifname)):
            assert device.idle_name is not None
            try:
                if ns_id(netns) != device.netns_id:
                    raise NotFound(f"{netns} names another namespace than when it was retired")
                async with device.lock:
                    port = await self._configure(device.process.ifname, key, listen_port, [])
                    await asyncio.gather(  # the shadow says whose it is again, as a new one
                        self.kernel.set_link(netns, device.idle_name, new_name=ifname,
                                             alias=alias),
                        self.kernel.set_link(device.underlay, device.process.ifname,
                                             alias=alias))
                if device.stopping or device.process.returncode is not None:
                    raise NotFound("its daemon ended meanwhile")
            except FabricError as exc:
                log.info("wireguard_retired_unusable", ifname=device.process.ifname,
                         netns=netns, error=str(exc))
                await self._stop_idle(device)
                continue
            device.ifname, device.private_key, device.listen_port = ifname, key, port
            device.peers, device.idle_name = {}, None
            return device
        return None

    def _socket_holder(self, name: str) -> _Device | None:
        """The device (in use or retired) whose daemon was started as ``name``."""
        for device in [*self._devices.values(), *self.retired.items()]:
            if device.process.ifname == name:
                return device
        return None

    async def reap(self, ifnames: Collection[str]) -> None:
        """Unlink the sockets of a previous run's daemons of ``ifnames`` once they ended with
        the TUNs just deleted (at most ``SOCKET_GRACE`` seconds for all); nothing for names of
        ours."""
        theirs = [validate_ifname(name) for name in ifnames]
        theirs = [name for name in theirs
                  if name not in self._devices and self._socket_holder(name) is None]
        for sock in await clear_sockets_of_ending(
                [socket_path(name, self.socket_dir) for name in theirs], SOCKET_GRACE):
            log.warning("wireguard_reap_daemon_live", socket=str(sock))

    async def retire(self, ifname: str, netns: str, current: str) -> None:
        """Keep ``ifname``'s daemon for a later :meth:`create` into ``netns`` at its MTU
        (module docstring), its TUN named ``current`` there now; otherwise delete it."""
        validate_ifname(ifname)
        device = self._devices.get(ifname)
        if (device is None or not device.shadow or device.netns != netns or device.stopping
                or device.process.returncode is not None or not self.retired.wants()):
            await self.delete(ifname)
            return
        idle_name, mark = pool_name(), f"{POOL_ALIAS}{os.getpid()}"
        try:
            async with device.lock:
                await self._uapi(device).set(wipe_lines())
                device.baseline, _ = await asyncio.gather(
                    self.kernel.reset_link(netns, current, new_name=idle_name, alias=mark),
                    self.kernel.set_link(device.underlay, device.process.ifname, alias=mark))
        except FabricError as exc:
            log.info("wireguard_retire_failed", ifname=ifname, error=str(exc))
            await self.delete(ifname)
            return
        if device.process.returncode is not None or device.stopping:
            await self.delete(ifname)  # it ended meanwhile
            return
        device.peers, device.idle_name = {}, idle_name
        self._devices.pop(ifname, None)
        self.retired.put(_idle_key(device), device)
        log.info("wireguard_retired", ifname=ifname, daemon=device.process.ifname,
                 netns=netns, kept_as=idle_name)

    def baseline(self, ifname: str) -> LinkStats | None:
        """The counters ``ifname``'s TUN had when this vWire got it (None: a new TUN)."""
        return self._device(ifname).baseline

    async def _stop_idle(self, device: _Device) -> None:
        """Stop a retired device's daemon and remove its shadow (its TUN ends with it)."""
        device.stopping = True
        async with device.lock:
            await device.process.stop()
            if device.supervisor is not None:
                await device.supervisor
            await self._remove_shadow(device.underlay, device.process.ifname)
        log.info("wireguard_retired_stopped", daemon=device.process.ifname, netns=device.netns)

    async def _start_in(
        self, ifname: str, underlay: str | None, netns: str, mtu: int, alias: str | None
    ) -> WgGoProcess:
        """A daemon in ``underlay`` running a TUN made in ``netns`` at ``mtu``, beside its
        shadow, both marked ``alias`` (module docstring); nothing is left on failure."""
        await self.kernel.open_tun(underlay, ifname, packet_info=True, persist=True, alias=alias)
        try:
            process = self._process(ifname, underlay)
            await self._start_with_tun(process, netns, mtu, alias)
            try:
                await self._set_shadow_mtu(process, underlay, mtu)
            except BaseException:
                await process.stop()
                raise
        except BaseException:
            await self._remove_shadow(underlay, ifname)
            raise
        return process

    async def _start_with_tun(self, process: WgGoProcess, netns: str, mtu: int,
                              alias: str | None = None) -> None:
        """Start ``process`` on a new TUN of its name in ``netns`` at ``mtu`` (gone when it
        exits). The daemon never changes that TUN's MTU: what it sets at start, by name in its
        own namespace, is its shadow's."""
        fd = await self.kernel.open_tun(netns, process.ifname, packet_info=True, mtu=mtu,
                                        alias=alias)
        assert fd is not None  # not persistent: the descriptor is ours to hand over
        try:
            await process.start(tun_fd=fd)
        finally:
            os.close(fd)  # the daemon holds its own copy

    async def _set_shadow_mtu(self, process: WgGoProcess, underlay: str | None,
                              mtu: int) -> None:
        """``mtu`` on the shadow, once the daemon (which set the shadow's MTU to its default
        when it started) has seen it."""
        await self.kernel.set_link(underlay, process.ifname, mtu=mtu)
        await self._daemon_sees(process, mtu)

    async def _remove_shadow(self, underlay: str | None, ifname: str) -> None:
        with contextlib.suppress(NotFound):
            await self.kernel.delete_link(underlay, ifname)

    async def _watch_namespaces(self) -> None:
        """Stop the daemon of a TUN whose namespace path no longer names the namespace it was
        made in (module docstring); ends with the last such TUN (``create`` starts it again)
        or at :meth:`close`."""
        while True:
            await asyncio.sleep(NETNS_POLL)
            watched = [device for device in [*self._devices.values(), *self.retired.items()]
                       if device.shadow]
            if not watched:
                self._netns_watch = None
                return
            for device in watched:
                if device.stopping or device.process.pid is None:
                    continue
                assert device.netns is not None
                if ns_id(device.netns) == device.netns_id:
                    continue
                log.warning("wireguard_workload_netns_gone", ifname=device.ifname,
                            netns=device.netns, pid=device.process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(device.process.pid, signal.SIGTERM)

    async def move(self, ifname: str, underlay_netns: str | None, target_netns: str) -> None:
        """Move the TUN; the recorded state, not ``underlay_netns``, says where it is now."""
        device = self._device(ifname)
        check_netns(target_netns, "target_netns")
        async with device.lock:
            if device.netns == target_netns:
                return
            mtu = await self.kernel.link_mtu(device.netns, ifname)
            await self._daemon_sees(device.process, mtu)
            await self.kernel.move_link(device.netns, ifname, target_netns)
            device.mtu = mtu
            device.netns = target_netns
        log.info("wireguard_moved", ifname=ifname, netns=target_netns)

    @staticmethod
    async def _daemon_sees(process: WgGoProcess, mtu: int) -> None:
        """Wait (bounded) until the daemon pads to ``mtu``; a warning if it does not."""
        if not await process.wait_mtu(mtu):
            log.warning("wireguard_go_mtu_unseen", ifname=process.ifname, mtu=mtu,
                        daemon_mtu=process.mtu)

    def daemon_mtu(self, ifname: str) -> int:
        """The MTU ``ifname``'s daemon last reported padding packets to."""
        return self._device(ifname).process.mtu

    async def set_peer(self, ifname: str, peer: WgPeer) -> None:
        peer = validate_peer(peer)
        device = self._device(ifname)
        async with device.lock:
            await self._uapi(device).set(peer_lines(peer))
            device.peers[peer.public_key] = peer
        log.info("wireguard_peer_set", ifname=ifname, peer=peer.public_key)

    async def add_allowed_ips(
        self, ifname: str, public_key: str, prefixes: tuple[str, ...]
    ) -> None:
        added = validate_peer(WgPeer(public_key, None, prefixes)).allowed_ips
        device = self._device(ifname)
        async with device.lock:
            await self._uapi(device).set(allowed_ip_lines(public_key, added))
            known = device.peers.get(public_key)
            if known is not None:  # what a restarted daemon is given again
                device.peers[public_key] = replace(
                    known, allowed_ips=tuple(dict.fromkeys(known.allowed_ips + added)))

    async def remove_peer(self, ifname: str, public_key: str) -> None:
        public_key = parse_public_key(public_key)
        device = self._device(ifname)
        async with device.lock:
            await self._uapi(device).set(removal_lines(public_key))
            device.peers.pop(public_key, None)
        log.info("wireguard_peer_removed", ifname=ifname, peer=public_key)

    async def stats(self, ifname: str) -> list[WgPeerStats]:
        state = await self._uapi(self._device(ifname)).get()
        return [peer.stats() for peer in state.peers]

    async def delete(self, ifname: str) -> None:
        validate_ifname(ifname)
        device = self._devices.get(ifname)
        if device is not None:
            device.stopping = True
            async with device.lock:
                await device.process.stop()
                if device.supervisor is not None:
                    await device.supervisor
                if device.shadow:
                    await self._remove_shadow(device.underlay, device.process.ifname)
                self._devices.pop(ifname, None)
            log.info("wireguard_deleted", ifname=ifname)
        if self._socket_holder(ifname) is not None:
            return  # the name's socket is a daemon's of ours, serving another vWire
        if not clear_stale_socket(socket_path(ifname, self.socket_dir)):
            log.warning("wireguard_delete_foreign_daemon", ifname=ifname)

    # ---- extras ---------------------------------------------------------------------------

    def interfaces(self) -> list[str]:
        """Names of the interfaces this backend runs."""
        return sorted(self._devices)

    def pid(self, ifname: str) -> int | None:
        """The daemon's pid (None while it is not running)."""
        return self._device(ifname).process.pid

    async def close(self) -> None:
        """Delete every interface this backend made and stop the pooled daemons."""
        if self._netns_watch is not None:
            self._netns_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._netns_watch
            self._netns_watch = None
        await self.pool.close()
        await self.retired.close()
        for ifname in list(self._devices):
            await self.delete(ifname)

    # ---- internals ------------------------------------------------------------------------

    def _device(self, ifname: str) -> _Device:
        validate_ifname(ifname)
        try:
            return self._devices[ifname]
        except KeyError:
            raise NotFound(
                f"wireguard interface {ifname} is not managed by this forwarder"
            ) from None

    def _client(self, uapi_name: str) -> UapiClient:
        """The UAPI client of the daemon started as ``uapi_name`` (its socket's name)."""
        return UapiClient(uapi_name, self.socket_dir)

    def _uapi(self, device: _Device) -> UapiClient:
        return self._client(device.process.ifname)

    def _process(self, ifname: str, netns: str | None) -> WgGoProcess:
        return WgGoProcess(
            ifname,
            netns,
            binary=self.binary,
            socket_dir=self.socket_dir,
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
            budget=self.budget,
        )

    async def _configure(
        self, ifname: str, key: PrivateKey, listen_port: int, peers: list[WgPeer]
    ) -> int:
        """Apply device settings and peers in one set to the daemon started as ``ifname``;
        return the port actually bound."""
        lines = device_lines(key, listen_port)
        for peer in peers:
            lines.extend(peer_lines(peer))
        client = self._client(ifname)
        await client.set(lines)
        if listen_port:  # the daemon reports the port it was given, bound or not yet
            return listen_port
        # The daemon binds its UDP socket only once it sees its TUN come up (an asynchronous
        # netlink event shortly after start); until then a requested port 0 reads back as 0.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        delay = 0.002
        while (port := (await client.get()).listen_port) == 0:
            if loop.time() >= deadline:
                raise DataplaneError(
                    f"wireguard-go for {ifname} did not bind a UDP port within "
                    f"{self.start_timeout} s"
                )
            await asyncio.sleep(delay)  # bounded poll for the daemon's own bind
            delay = min(delay * 2, 0.05)
        return port

    async def _supervise(self, device: _Device) -> None:
        try:
            await self._watch(device)
        except Exception as exc:  # a bug here must not die silently in a task
            log.exception("wireguard_supervisor_failed", ifname=device.ifname)
            self._publish(WgProcessEvent(device.ifname, "restart_failed", None, repr(exc)))

    async def _watch(self, device: _Device) -> None:
        while not device.stopping:
            code = await device.process.wait()
            if device.stopping:
                return
            if device.idle_name is not None:  # retired: not restarted, no longer kept
                await self._forget_retired(device, code)
                return
            detail = device.process.output_tail()
            log.warning(
                "wireguard_go_exited",
                ifname=device.ifname,
                pid=device.process.pid,
                returncode=code,
                output=detail,
            )
            self._publish(WgProcessEvent(device.ifname, "exited", code, detail))
            clear_stale_socket(device.process.socket)
            async with device.lock:
                if device.stopping:
                    return
                if device.idle_name is not None:  # retired while it was ending
                    await self._forget_retired(device, code)
                    return
                error = await self._restart(device)
            if error is not None:
                log.error("wireguard_go_restart_failed", ifname=device.ifname, error=error)
                self._publish(WgProcessEvent(device.ifname, "restart_failed", code, error))
                return
            log.info("wireguard_go_restarted", ifname=device.ifname, pid=device.process.pid)
            self._publish(WgProcessEvent(device.ifname, "restarted", code))

    async def _forget_retired(self, device: _Device, code: int | None) -> None:
        """A retired daemon that ended on its own (e.g. its namespace went): not kept."""
        self.retired.remove(device)
        device.stopping = True
        log.info("wireguard_retired_exited", daemon=device.process.ifname, returncode=code,
                 netns=device.netns)
        clear_stale_socket(device.process.socket)
        await self._remove_shadow(device.underlay, device.process.ifname)

    async def _restart(self, device: _Device) -> str | None:
        """Bring the daemon back with its configuration; the last error, or None on success."""
        error = "no attempt made"
        for attempt in range(self.restart.max_attempts):
            if device.stopping:
                return "interface is being deleted"
            if attempt:
                await asyncio.sleep(self.restart.backoff * 2 ** (attempt - 1))  # backoff
            process = self._process(device.process.ifname, device.underlay)  # its socket
            try:
                if device.shadow:  # its TUN went with the daemon: a new one where it was
                    assert device.netns is not None
                    await self._start_with_tun(process, device.netns, device.mtu)
                else:
                    await process.start()
                device.process = process
                await self._configure(
                    process.ifname,
                    device.private_key,
                    device.listen_port,
                    list(device.peers.values()),
                )
                if device.shadow:
                    assert device.netns is not None
                    await self._set_shadow_mtu(process, device.underlay, device.mtu)
                    device.netns_id = ns_id(device.netns)  # where the path leads now
                elif device.netns != device.underlay and device.netns is not None:
                    if device.mtu:  # the new daemon's TUN has its default MTU: set it first
                        await self.kernel.set_link(device.underlay, process.ifname,
                                                   mtu=device.mtu)
                        await self._daemon_sees(process, device.mtu)
                    await self.kernel.move_link(device.underlay, process.ifname, device.netns)
                if process.ifname != device.ifname:  # started as another name: the TUN's
                    await self.kernel.set_link(device.netns, process.ifname,
                                               new_name=device.ifname)
                return None
            except FabricError as exc:
                error = str(exc)
                log.warning(
                    "wireguard_go_restart_attempt_failed",
                    ifname=device.ifname,
                    attempt=attempt + 1,
                    error=error,
                )
                with contextlib.suppress(DataplaneError):
                    await process.stop()
        return error

