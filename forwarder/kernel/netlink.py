"""The real kernel port: rtnetlink through pyroute2, off the event loop.

Only this module and :mod:`forwarder.kernel.changes` import pyroute2: reads and dumps go through
its asyncio API; single changes (addresses, routes, rules, neighbours, link settings, veth
pairs, moves and deletions of links) are messages built with its classes and sent by a
:class:`forwarder.kernel.changes.Changer`. Every
call runs in the worker thread of its namespace (:mod:`forwarder.kernel.worker`): a thread that
joined the namespace once (``setns``, no fork) and keeps its netlink sockets there (one with
``AsyncIPRoute(use_socket=...)`` on the thread's own event loop, one for the changes), plus a
cache of interface indexes by name. The forwarder's event loop only awaits the result, so a slow
kernel call (moving a link takes ~20 ms under the kernel's RTNL lock) never stalls other
connections, and calls in different namespaces proceed in parallel. pyroute2's ``netns=``
argument is never used (it forks, and it creates missing namespaces).

A workload namespace's worker ends after ``idle`` seconds without a call (default 1 s), so the
forwarder keeps a namespace its owner deleted alive at most that long. Every path is opened
through the guard at every call, as before, and the worker is chosen by the identity of what the
path names now.

Reading an interface's index by name (to fill the cache) and its MTU (:meth:`link_mtu`) are
ioctls on a plain socket made in the worker's thread, so in its namespace: a netlink "get" would
return, and pyroute2 decode, every attribute of the link for one number (that decoding was a
third of the forwarder's CPU per vWire).

Index cache: filled by lookups and renames, emptied for a name by its deletion, move or rename;
an operation that used a cached index and got "no such device" (the link was deleted and made
again by someone else) looks the name up once more and retries. Deletion always looks the name
up afresh.

Every ``NetlinkError`` is translated into an :mod:`sdk.errors` exception whose message names the
operation, the namespace and the kernel's reason (see :func:`_translate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache, partial
from ipaddress import ip_interface
from typing import Any, TypeVar

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from sdk.errors import (
    AlreadyExists,
    DataplaneError,
    FabricError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from sdk.netns import new_netns, open_netns

from . import changes
from .batch import add_in_order, delete_every
from .netns import (
    DEFAULT_GUARD,
    NamespaceGuard,
    own_netns_id,
    resolve_ref,
    workload_namespaces,
)
from .nsref import parse_ns_ref
from .port import MAIN_TABLE, Address, Entry, Link, LinkStats, Neighbour, Netns, Route, Rule
from .sysctl import in_namespace, write_sysctls
from .worker import NamespaceWorkers

T = TypeVar("T")

_IFF_UP = 0x1
_RTPROT_KERNEL = 2
_RTN_UNICAST = 1
_RTNH_F_ONLINK = 0x4
_RT_SCOPE_LINK = 253
_SYSTEM_TABLES = frozenset({0, 253, 254, 255})
_SIOCGIFMTU = 0x8921
_STATS_LINK_64 = 0x1  # IFLA_STATS_FILTER_BIT(IFLA_STATS_LINK_64)
_IFREQ = struct.Struct("16si12x")  # struct ifreq: the name, then ifr_mtu in the union
_TUN_IFREQ = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags in the union
_TUNSETIFF, _TUNSETPERSIST = 0x400454CA, 0x400454CB
_IFF_TUN, _IFF_NO_PI, _IFF_TUN_EXCL = 0x0001, 0x1000, 0x8000


def _where(netns: Netns) -> str:
    return "the forwarder's namespace" if netns is None else netns


def _translate(err: NetlinkError, what: str) -> FabricError:
    """Map a netlink error code onto the sdk.errors tree with a message that says what failed."""
    code = int(err.code)
    reason = f"{what}: {os.strerror(code)} (errno {code})"
    if code == errno.EEXIST:
        return AlreadyExists(f"{reason}; pick another name or remove the existing one")
    if code in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL):
        return NotFound(reason)
    if code == errno.EOPNOTSUPP:
        return FailedPrecondition(f"{reason}; the kernel lacks this feature (module not loaded?)")
    if code in (errno.EPERM, errno.EACCES):
        return FailedPrecondition(f"{reason}; the forwarder needs CAP_NET_ADMIN")
    if code in (errno.EINVAL, errno.ERANGE):
        return InvalidArgument(what, f"the kernel rejected the value ({os.strerror(code)})")
    return DataplaneError(reason)


@contextmanager
def _netlink_errors(what: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as err:
        raise _translate(err, what) from None


@lru_cache(maxsize=1024)  # a setup names each prefix in routes and rules, its close again
def _split(cidr: str) -> tuple[str, int]:
    iface = ip_interface(cidr)
    return str(iface.ip), iface.network.prefixlen


class _Rtnl:
    """One namespace's netlink socket and interface indexes; lives in its worker thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.ipr: Any = AsyncIPRoute(use_socket=self.sock, groups=0)
        self.changer = changes.Changer()  # single changes, without pyroute2's request layer
        # For interface ioctls: made in this thread, so it answers for this namespace.
        self.ioctl_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.indexes: dict[str, int] = {}
        self.where = ""

    def close(self) -> None:
        try:
            self.ipr.close()
        finally:
            self.sock.close()
            self.ioctl_sock.close()
            self.changer.close()

    async def lookup(self, name: str) -> int:
        """The index of ``name``, from the cache or the kernel (NotFound when absent)."""
        cached = self.indexes.get(name)
        if cached is not None:
            return cached
        try:  # the C library opens its socket here, in this thread's namespace
            index = socket.if_nametoindex(name)
        except (OSError, ValueError):
            raise NotFound(f"interface {name} does not exist in {self.where}") from None
        self.indexes[name] = index
        return index

    def mtu(self, name: str) -> int:
        """The MTU of ``name`` (NotFound when absent)."""
        try:
            reply = fcntl.ioctl(self.ioctl_sock, _SIOCGIFMTU, _IFREQ.pack(name.encode(), 0))
        except (OSError, ValueError, UnicodeEncodeError):
            raise NotFound(f"interface {name} does not exist in {self.where}") from None
        return int(_IFREQ.unpack(reply)[1])

    async def on_link(self, name: str, what: str, op: Callable[[int], Awaitable[T]]) -> T:
        """``op(index of name)``, translated; retried once with a fresh index when a cached one
        turns out stale (see the module docstring)."""
        cached = name in self.indexes
        index = await self.lookup(name)
        with _netlink_errors(what):
            try:
                return await op(index)
            except NetlinkError as err:
                if not cached or err.code != errno.ENODEV:
                    raise
                self.indexes.pop(name, None)
        index = await self.lookup(name)
        with _netlink_errors(what):
            return await op(index)


def _link_stats(stats: Any) -> LinkStats:
    """:class:`LinkStats` of an ``IFLA_STATS_LINK_64`` attribute."""
    return LinkStats(
        rx_bytes=int(stats.get("rx_bytes", 0)),
        tx_bytes=int(stats.get("tx_bytes", 0)),
        rx_packets=int(stats.get("rx_packets", 0)),
        tx_packets=int(stats.get("tx_packets", 0)),
    )


async def _settle_tun(rtnl: _Rtnl, mtu: int | None, alias: str | None, index: int) -> None:
    """MTU and alias of a TUN device just made (one change)."""
    rtnl.changer.send(changes.set_link(index, mtu=mtu, alias=alias))


class NetlinkKernel:
    """:class:`forwarder.kernel.port.KernelPort` over the running kernel (needs CAP_NET_ADMIN).

    Every namespace given as a path is opened through ``guard`` (default: the process's
    :data:`forwarder.kernel.netns.DEFAULT_GUARD`), so neither a request nor a later call can
    reach the forwarder's own or the host's namespace by path unless that is allowed; ``None``
    (the forwarder's own namespace, chosen by the code, never by a request) is always fine.
    ``idle``: seconds a workload namespace's worker thread outlives its last call.
    """

    def __init__(self, guard: NamespaceGuard | None = None, *, idle: float = 1.0) -> None:
        self._guard = guard
        self._workers: NamespaceWorkers[_Rtnl] = NamespaceWorkers(
            _Rtnl, _Rtnl.close, idle=idle
        )
        self._held: dict[str, int] = {}  # namespaces made here, by path

    @property
    def guard(self) -> NamespaceGuard:
        return self._guard or DEFAULT_GUARD

    def workers(self) -> int:
        """Worker threads running now (one per namespace recently used)."""
        return self._workers.live()

    def close(self) -> None:
        """End the worker threads (they finish the calls already submitted)."""
        self._workers.close()

    async def _run(self, netns: Netns, job: Callable[[_Rtnl], Awaitable[T]], *,
                   now: bool = False) -> T:
        """``job`` in the worker of ``netns``, opened through the guard (module docstring);
        ``now``: it makes only blocking calls (changes, ioctls), no pyroute2 asyncio calls, so
        it runs without the worker's event loop (:class:`NamespaceWorkers`)."""
        where = _where(netns)

        async def named(rtnl: _Rtnl) -> T:
            rtnl.where = where
            return await job(rtnl)

        if netns is None:
            return await self._workers.run(None, named, now=now)
        fd = self.guard.open(netns)
        try:
            return await self._workers.run(fd, named, now=now)
        finally:
            os.close(fd)

    # -- namespaces ------------------------------------------------------------------------------

    async def resolve_netns(self, ref: str) -> str:
        return resolve_ref(parse_ns_ref(ref, "inodeURL"), "inodeURL", self.guard)

    async def list_namespaces(self) -> list[str]:
        own = own_netns_id()  # listed as None by callers, never twice
        return [path for ident, path in workload_namespaces(self.guard).items() if ident != own]

    async def create_namespace(self, sysctls: Mapping[str, str]) -> str:
        fd = new_netns()
        path = f"/proc/{os.getpid()}/fd/{fd}"
        self._held[path] = fd
        try:
            await in_namespace(path, lambda: write_sysctls(sysctls), self.guard)
            await self.set_link(path, "lo", up=True)
        except BaseException:
            await self.delete_namespace(path)
            raise
        return path

    async def delete_namespace(self, path: str) -> None:
        fd = self._held.pop(path, None)
        if fd is not None:
            os.close(fd)

    # -- links -----------------------------------------------------------------------------------

    async def create_veth(self, name: str, netns: Netns, peer_name: str, peer_netns: Netns) -> None:
        what = (
            f"create veth {name} in {_where(netns)} with peer {peer_name} in {_where(peer_netns)}"
        )
        peer_fd = None if peer_netns is None else self.guard.open(peer_netns, "peer_netns")
        if peer_fd is None and netns is not None:
            # The peer goes to the forwarder's namespace: name it by a fd of our own.
            peer_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

        async def job(rtnl: _Rtnl) -> None:
            with _netlink_errors(what):
                rtnl.changer.send(changes.new_veth(name, peer_name, peer_fd))

        try:
            await self._run(netns, job, now=True)
        finally:
            if peer_fd is not None:
                os.close(peer_fd)

    async def set_link(
        self,
        netns: Netns,
        name: str,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        alias: str | None = None,
        new_name: str | None = None,
        mac: str | None = None,
    ) -> None:
        given = {"up": up, "mtu": mtu, "alias": alias, "new_name": new_name, "mac": mac}
        if all(value is None for value in given.values()):
            return

        async def job(rtnl: _Rtnl) -> None:
            async def change(index: int) -> None:
                rtnl.changer.send(changes.set_link(index, up=up, mtu=mtu, alias=alias,
                                                   new_name=new_name, mac=mac))
                if new_name is not None and new_name != name:
                    rtnl.indexes.pop(name, None)
                    rtnl.indexes[new_name] = index

            what = sorted(key for key, value in given.items() if value is not None)
            await rtnl.on_link(name, f"set {what} of {name} in {rtnl.where}", change)

        await self._run(netns, job, now=True)

    async def reset_link(self, netns: Netns, name: str, *, new_name: str,
                         alias: str) -> LinkStats:
        async def job(rtnl: _Rtnl) -> Any:
            async def reset(index: int) -> Any:
                rtnl.changer.send(changes.set_link(index, up=False))  # routes go with it
                for msg in [msg async for msg in await rtnl.ipr.addr("dump", index=index)]:
                    if int(msg["index"]) == index:
                        rtnl.changer.send(changes.address(
                            "del", index=index, prefixlen=int(msg["prefixlen"]),
                            address=str(msg.get("local") or msg.get("address"))))
                rtnl.changer.send(changes.set_link(index, new_name=new_name, alias=alias))
                rtnl.indexes.pop(name, None)
                rtnl.indexes[new_name] = index
                (msg,) = await rtnl.ipr.stats("get", ifindex=index, filter_mask=_STATS_LINK_64)
                return msg.get("IFLA_STATS_LINK_64")

            return await rtnl.on_link(name, f"reset {name} in {rtnl.where}", reset)

        return _link_stats(await self._run(netns, job) or {})

    async def move_link(self, netns: Netns, name: str, target_netns: Netns) -> None:
        if target_netns is None:
            fd = open_netns("/proc/self/ns/net", "target_netns")
        else:
            fd = self.guard.open(target_netns, "target_netns")

        async def job(rtnl: _Rtnl) -> None:
            async def move(index: int) -> None:
                rtnl.changer.send(changes.move_link(index, fd))
                rtnl.indexes.pop(name, None)

            what = f"move {name} from {rtnl.where} to {_where(target_netns)}"
            await rtnl.on_link(name, what, move)

        try:
            await self._run(netns, job, now=True)
        finally:
            os.close(fd)

    async def open_tun(self, netns: Netns, name: str, *, packet_info: bool,
                       persist: bool = False, mtu: int | None = None,
                       alias: str | None = None) -> int | None:
        flags = _IFF_TUN | _IFF_TUN_EXCL | (0 if packet_info else _IFF_NO_PI)
        settings = sorted(key for key, value in (("alias", alias), ("mtu", mtu))
                          if value is not None)

        async def job(rtnl: _Rtnl) -> int | None:
            what = f"create TUN device {name} in {rtnl.where}"
            try:
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            except OSError as err:
                raise FailedPrecondition(
                    f"{what}: cannot open /dev/net/tun ({err.strerror}); load the tun module"
                ) from None
            try:
                fcntl.ioctl(fd, _TUNSETIFF, _TUN_IFREQ.pack(name.encode(), flags))
                if persist:
                    fcntl.ioctl(fd, _TUNSETPERSIST, 1)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EBUSY, errno.EEXIST):
                    raise AlreadyExists(f"{what}: an interface of that name exists; pick "
                                        "another name or remove the existing one") from None
                raise DataplaneError(f"{what}: {err.strerror} (errno {err.errno})") from None
            rtnl.indexes.pop(name, None)
            if settings:
                try:
                    await rtnl.on_link(name, f"set {settings} of the new TUN device {name} in "
                                       f"{rtnl.where}", partial(_settle_tun, rtnl, mtu, alias))
                except BaseException:
                    if persist:  # the descriptor alone does not end a persistent device
                        with contextlib.suppress(OSError):
                            fcntl.ioctl(fd, _TUNSETPERSIST, 0)
                    os.close(fd)
                    rtnl.indexes.pop(name, None)
                    raise
            if persist:
                os.close(fd)
                return None
            return fd

        # The worker makes the device even if the caller stops waiting: a caller cancelled
        # meanwhile waits for it and removes it again, so no descriptor or device is left over.
        made = asyncio.ensure_future(self._run(netns, job, now=True))
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:
            with contextlib.suppress(FabricError):
                fd = await made
                if fd is not None:
                    os.close(fd)
                else:
                    await self.delete_link(netns, name)
            raise

    async def delete_link(self, netns: Netns, name: str) -> None:
        async def job(rtnl: _Rtnl) -> None:
            rtnl.indexes.pop(name, None)  # never delete by a remembered index
            index = await rtnl.lookup(name)
            rtnl.indexes.pop(name, None)
            with _netlink_errors(f"delete {name} in {rtnl.where}"):
                rtnl.changer.send(changes.delete_link(index))

        await self._run(netns, job, now=True)

    @staticmethod
    def _link(msg: Any) -> Link:
        return Link(
            name=str(msg.get("ifname")),
            index=int(msg["index"]),
            kind=msg.get(("linkinfo", "kind")),
            mtu=int(msg.get("mtu") or 0),
            up=bool(int(msg["flags"]) & _IFF_UP),
            alias=msg.get("ifalias"),
            mac=msg.get("address"),
        )

    @staticmethod
    async def _dump_links(rtnl: _Rtnl) -> list[Any]:
        with _netlink_errors(f"list interfaces in {rtnl.where}"):
            return [msg async for msg in await rtnl.ipr.link("dump")]

    async def _get_link(self, netns: Netns, name: str, what: str) -> Any:
        async def job(rtnl: _Rtnl) -> Any:
            async def get(index: int) -> Any:
                (msg,) = tuple(await rtnl.ipr.link("get", index=index))
                return msg

            return await rtnl.on_link(name, f"{what} {name} in {rtnl.where}", get)

        return await self._run(netns, job)

    async def get_link(self, netns: Netns, name: str) -> Link:
        return self._link(await self._get_link(netns, name, "read"))

    async def link_mtu(self, netns: Netns, name: str) -> int:
        async def job(rtnl: _Rtnl) -> int:
            return rtnl.mtu(name)

        return await self._run(netns, job, now=True)

    async def list_links(self, netns: Netns, alias_prefix: str | None = None) -> list[Link]:
        async def job(rtnl: _Rtnl) -> list[Link]:
            return [self._link(msg) for msg in await self._dump_links(rtnl)]

        links = await self._run(netns, job)
        if alias_prefix is None:
            return links
        return [link for link in links if (link.alias or "").startswith(alias_prefix)]

    async def link_stats(self, netns: Netns, name: str) -> LinkStats:
        # RTM_GETSTATS for the 64-bit link counters alone: a link "get" would return, and
        # pyroute2 decode, every attribute of the link (three times the CPU)
        async def job(rtnl: _Rtnl) -> Any:
            async def get(index: int) -> Any:
                (msg,) = await rtnl.ipr.stats("get", ifindex=index, filter_mask=_STATS_LINK_64)
                return msg.get("IFLA_STATS_LINK_64")

            return await rtnl.on_link(name, f"read counters of {name} in {rtnl.where}", get)

        return _link_stats(await self._run(netns, job) or {})

    # -- addresses -------------------------------------------------------------------------------

    async def add_address(self, netns: Netns, name: str, cidr: str) -> None:
        await self._one("add", netns, Address(name, cidr))

    async def delete_address(self, netns: Netns, name: str, cidr: str) -> None:
        await self._one("del", netns, Address(name, cidr))

    async def list_addresses(self, netns: Netns, name: str) -> list[str]:
        async def job(rtnl: _Rtnl) -> tuple[int, list[Any]]:
            async def dump(index: int) -> tuple[int, list[Any]]:
                return index, [msg async for msg in await rtnl.ipr.addr("dump", index=index)]

            return await rtnl.on_link(name, f"list addresses of {name} in {rtnl.where}", dump)

        index, msgs = await self._run(netns, job)
        result = []
        for msg in msgs:
            if int(msg["index"]) != index:
                continue
            cidr = f"{msg.get('address')}/{msg['prefixlen']}"
            if not ip_interface(cidr).is_link_local:
                result.append(cidr)
        return result

    # -- routes ----------------------------------------------------------------------------------

    async def add_route(self, netns: Netns, route: Route) -> None:
        await self._one("add", netns, route)

    async def delete_route(self, netns: Netns, route: Route) -> None:
        await self._one("del", netns, route)

    async def list_routes(self, netns: Netns, table: int = MAIN_TABLE) -> list[Route]:
        async def job(rtnl: _Rtnl) -> tuple[list[Any], list[Any]]:
            links = await self._dump_links(rtnl)
            with _netlink_errors(f"list routes in {rtnl.where}"):
                return links, [msg async for msg in await rtnl.ipr.route("dump")]

        links, msgs = await self._run(netns, job)
        names = {int(m["index"]): str(m.get("ifname")) for m in links}
        routes = []
        for msg in msgs:
            if (
                msg.get("table") != table
                or msg["type"] != _RTN_UNICAST
                or msg["proto"] == _RTPROT_KERNEL
            ):
                continue
            zero = "0.0.0.0" if msg["family"] == socket.AF_INET else "::"
            routes.append(
                Route(
                    dst=f"{msg.get('dst') or zero}/{msg['dst_len']}",
                    dev=names.get(int(msg.get("oif") or 0), "?"),
                    gateway=msg.get("gateway"),
                    table=table,
                    onlink=bool(int(msg["flags"]) & _RTNH_F_ONLINK),
                )
            )
        return routes

    # -- rules -----------------------------------------------------------------------------------

    async def add_rule(self, netns: Netns, rule: Rule) -> None:
        await self._one("add", netns, rule)

    async def delete_rule(self, netns: Netns, rule: Rule) -> None:
        await self._one("del", netns, rule)

    async def list_rules(self, netns: Netns) -> list[Rule]:
        async def job(rtnl: _Rtnl) -> list[Any]:
            with _netlink_errors(f"list rules in {rtnl.where}"):
                return [msg async for msg in await rtnl.ipr.rule("dump")]

        rules = []
        for msg in await self._run(netns, job):
            table = int(msg.get("table") or 0)
            if table in _SYSTEM_TABLES:
                continue
            src = f"{msg.get('src')}/{msg['src_len']}" if msg.get("src") else None
            dst = f"{msg.get('dst')}/{msg['dst_len']}" if msg.get("dst") else None
            rules.append(
                Rule(
                    priority=int(msg.get("priority") or 0),
                    table=table,
                    family=int(msg["family"]),
                    src=src,
                    dst=dst,
                    iif=msg.get("iifname"),
                )
            )
        return rules

    # -- neighbours ------------------------------------------------------------------------------

    async def add_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        await self._one("add", netns, neighbour)

    async def delete_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        await self._one("del", netns, neighbour)

    # -- entries (addresses, routes, rules, neighbours) ------------------------------------------

    async def add_all(self, netns: Netns, entries: Sequence[Entry]) -> None:
        async def job(rtnl: _Rtnl) -> None:
            await add_in_order(entries, partial(_change, rtnl, "add"),
                               partial(_change, rtnl, "del"))

        if entries:
            await self._run(netns, job, now=True)

    async def delete_all(self, netns: Netns, entries: Sequence[Entry]) -> None:
        async def job(rtnl: _Rtnl) -> None:
            await delete_every(entries, partial(_change, rtnl, "del"))

        if entries:
            await self._run(netns, job, now=True)

    async def _one(self, command: str, netns: Netns, entry: Entry) -> None:
        async def job(rtnl: _Rtnl) -> None:
            await _change(rtnl, command, entry)

        await self._run(netns, job, now=True)


async def _change(rtnl: _Rtnl, command: str, entry: Entry) -> None:
    """Add (``add``) or delete (``del``) one entry, from the worker of its namespace; errors are
    translated, naming the entry and the namespace."""
    if isinstance(entry, Rule):
        with _netlink_errors(f"{command} rule {entry.priority} in {rtnl.where}"):
            rtnl.changer.send(_rule_change(command, entry))
        return
    build, what = _change_of(command, entry)

    async def send(index: int) -> None:
        rtnl.changer.send(build(index=index))

    await rtnl.on_link(entry.dev, f"{what} in {rtnl.where}", send)


def _change_of(command: str, entry: Address | Route | Neighbour
               ) -> tuple[Callable[..., changes.Change], str]:
    """How to make ``command`` of an entry on a link, given the link's index; and its name."""
    if isinstance(entry, Address):
        address, prefixlen = _split(entry.cidr)
        nodad = ":" in address and command == "add"  # IPv6: usable at once
        return (partial(changes.address, command, address=address, prefixlen=prefixlen,
                        nodad=nodad), f"{command} address {entry.cidr} on {entry.dev}")
    if isinstance(entry, Route):
        dst, dst_len = _split(entry.dst)
        return (partial(changes.route, command, dst=dst, dst_len=dst_len, table=entry.table,
                        gateway=entry.gateway,
                        # no gateway: a link route, like `ip route add X dev Y`
                        scope=0 if entry.gateway is not None else _RT_SCOPE_LINK,
                        flags=_RTNH_F_ONLINK if entry.onlink else 0),
                f"{command} route {entry.dst} dev {entry.dev}")
    command = "replace" if command == "add" else command  # a neighbour entry is replaced
    return (partial(changes.neighbour, command, dst=entry.ip, lladdr=entry.lladdr),
            f"{command} neighbour {entry.ip} on {entry.dev}")


def _rule_change(command: str, rule: Rule) -> changes.Change:
    spec: dict[str, Any] = {}
    for key, cidr in (("src", rule.src), ("dst", rule.dst)):
        if cidr is not None:
            spec[key], spec[f"{key}_len"] = _split(cidr)
    return changes.rule(command, family=rule.family, priority=rule.priority, table=rule.table,
                        iifname=rule.iif, **spec)
