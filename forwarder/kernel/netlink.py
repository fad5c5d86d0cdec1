"""The real kernel port: rtnetlink through pyroute2's asyncio API.

This is the only module of the project that imports pyroute2. Each call opens a netlink socket
in the target namespace (fork-free, see :mod:`forwarder.kernel.netns`), hands it to
``AsyncIPRoute(use_socket=...)``, does its work and closes the socket, so the forwarder never
holds a reference that would keep a deleted workload namespace alive. pyroute2's
``netns=`` argument is never used (it forks, and it creates missing namespaces).

Every ``NetlinkError`` is translated into an :mod:`sdk.errors` exception whose message names the
operation, the namespace and the kernel's reason (see :func:`_translate`).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from ipaddress import ip_interface, ip_network
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from sdk.errors import (
    AlreadyExists,
    DataplaneError,
    FabricError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from sdk.netns import open_netns

from .netns import (
    DEFAULT_GUARD,
    NamespaceGuard,
    netlink_socket_in,
    own_netns_id,
    resolve_ref,
    workload_namespaces,
)
from .nsref import parse_ns_ref
from .port import MAIN_TABLE, Link, LinkStats, Neighbour, Netns, Route, Rule

_IFF_UP = 0x1
_IFA_F_NODAD = 0x2
_RTPROT_KERNEL = 2
_RTN_UNICAST = 1
_RTNH_F_ONLINK = 0x4
_NUD_PERMANENT = 0x80
_RT_SCOPE_LINK = 253
_SYSTEM_TABLES = frozenset({0, 253, 254, 255})


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


def _split(cidr: str) -> tuple[str, int]:
    iface = ip_interface(cidr)
    return str(iface.ip), iface.network.prefixlen


def _family(cidr: str) -> int:
    return socket.AF_INET if ip_network(cidr, strict=False).version == 4 else socket.AF_INET6


class NetlinkKernel:
    """:class:`forwarder.kernel.port.KernelPort` over the running kernel (needs CAP_NET_ADMIN).

    Every namespace given as a path is opened through ``guard`` (default: the process's
    :data:`forwarder.kernel.netns.DEFAULT_GUARD`), so neither a request nor a later call can
    reach the forwarder's own or the host's namespace by path unless that is allowed; ``None``
    (the forwarder's own namespace, chosen by the code, never by a request) is always fine.
    """

    def __init__(self, guard: NamespaceGuard | None = None) -> None:
        self._guard = guard

    @property
    def guard(self) -> NamespaceGuard:
        return self._guard or DEFAULT_GUARD

    @asynccontextmanager
    async def _rtnl(self, netns: Netns) -> AsyncIterator[Any]:
        sock = await netlink_socket_in(netns, self.guard)
        try:
            ipr = AsyncIPRoute(use_socket=sock, groups=0)
            try:
                yield ipr
            finally:
                ipr.close()
        finally:
            sock.close()

    async def _index(self, ipr: Any, netns: Netns, name: str) -> int:
        with _netlink_errors(f"look up {name} in {_where(netns)}"):
            found = await ipr.link_lookup(ifname=name)
        if not found:
            raise NotFound(f"interface {name} does not exist in {_where(netns)}")
        return int(found[0])

    # -- namespaces ------------------------------------------------------------------------------

    async def resolve_netns(self, ref: str) -> str:
        return resolve_ref(parse_ns_ref(ref, "inodeURL"), "inodeURL", self.guard)

    async def list_namespaces(self) -> list[str]:
        own = own_netns_id()  # listed as None by callers, never twice
        return [path for ident, path in workload_namespaces(self.guard).items() if ident != own]

    # -- links -----------------------------------------------------------------------------------

    async def create_veth(self, name: str, netns: Netns, peer_name: str, peer_netns: Netns) -> None:
        what = (
            f"create veth {name} in {_where(netns)} with peer {peer_name} in {_where(peer_netns)}"
        )
        peer: dict[str, Any] = {"ifname": peer_name}
        peer_fd = None if peer_netns is None else self.guard.open(peer_netns, "peer_netns")
        try:
            if peer_fd is not None:
                peer["net_ns_fd"] = peer_fd
            elif netns is not None:
                # The peer goes to the forwarder's namespace: name it by a fd of our own.
                peer_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                peer["net_ns_fd"] = peer_fd
            async with self._rtnl(netns) as ipr:
                with _netlink_errors(what):
                    await ipr.link("add", ifname=name, kind="veth", peer=peer)
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
    ) -> None:
        changes: dict[str, Any] = {}
        if mtu is not None:
            changes["mtu"] = mtu
        if alias is not None:
            changes["ifalias"] = alias
        if new_name is not None:
            changes["ifname"] = new_name
        if up is not None:
            changes["state"] = "up" if up else "down"
        if not changes:
            return
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, name)
            with _netlink_errors(f"set {sorted(changes)} of {name} in {_where(netns)}"):
                await ipr.link("set", index=index, **changes)

    async def move_link(self, netns: Netns, name: str, target_netns: Netns) -> None:
        if target_netns is None:
            fd = open_netns("/proc/self/ns/net", "target_netns")
        else:
            fd = self.guard.open(target_netns, "target_netns")
        try:
            async with self._rtnl(netns) as ipr:
                index = await self._index(ipr, netns, name)
                with _netlink_errors(f"move {name} from {_where(netns)} to {_where(target_netns)}"):
                    await ipr.link("set", index=index, net_ns_fd=fd)
        finally:
            os.close(fd)

    async def delete_link(self, netns: Netns, name: str) -> None:
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, name)
            with _netlink_errors(f"delete {name} in {_where(netns)}"):
                await ipr.link("del", index=index)

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

    async def _dump_links(self, ipr: Any, netns: Netns) -> list[Any]:
        with _netlink_errors(f"list interfaces in {_where(netns)}"):
            return [msg async for msg in await ipr.link("dump")]

    async def get_link(self, netns: Netns, name: str) -> Link:
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, name)
            with _netlink_errors(f"read {name} in {_where(netns)}"):
                (msg,) = tuple(await ipr.link("get", index=index))
        return self._link(msg)

    async def list_links(self, netns: Netns, alias_prefix: str | None = None) -> list[Link]:
        async with self._rtnl(netns) as ipr:
            links = [self._link(msg) for msg in await self._dump_links(ipr, netns)]
        if alias_prefix is None:
            return links
        return [link for link in links if (link.alias or "").startswith(alias_prefix)]

    async def link_stats(self, netns: Netns, name: str) -> LinkStats:
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, name)
            with _netlink_errors(f"read counters of {name} in {_where(netns)}"):
                (msg,) = tuple(await ipr.link("get", index=index))
        stats = msg.get("stats64") or msg.get("stats") or {}
        return LinkStats(
            rx_bytes=int(stats.get("rx_bytes", 0)),
            tx_bytes=int(stats.get("tx_bytes", 0)),
            rx_packets=int(stats.get("rx_packets", 0)),
            tx_packets=int(stats.get("tx_packets", 0)),
        )

    # -- addresses -------------------------------------------------------------------------------

    async def _address(self, command: str, netns: Netns, name: str, cidr: str) -> None:
        address, prefixlen = _split(cidr)
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, name)
            extra = {"flags": _IFA_F_NODAD} if ":" in address and command == "add" else {}
            with _netlink_errors(f"{command} address {cidr} on {name} in {_where(netns)}"):
                await ipr.addr(command, index=index, address=address, prefixlen=prefixlen, **extra)

    async def add_address(self, netns: Netns, name: str, cidr: str) -> None:
        await self._address("add", netns, name, cidr)

    async def delete_address(self, netns: Netns, name: str, cidr: str) -> None:
        await self._address("del", netns, name, cidr)

    async def list_addresses(self, netns: Netns, name: str) -> list[str]:
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, name)
            with _netlink_errors(f"list addresses of {name} in {_where(netns)}"):
                msgs = [msg async for msg in await ipr.addr("dump", index=index)]
        result = []
        for msg in msgs:
            if int(msg["index"]) != index:
                continue
            cidr = f"{msg.get('address')}/{msg['prefixlen']}"
            if not ip_interface(cidr).is_link_local:
                result.append(cidr)
        return result

    # -- routes ----------------------------------------------------------------------------------

    async def _route(self, command: str, netns: Netns, route: Route) -> None:
        what = f"{command} route {route.dst} dev {route.dev} in {_where(netns)}"
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, route.dev)
            spec: dict[str, Any] = {"dst": route.dst, "oif": index, "table": route.table}
            if route.gateway is not None:
                spec["gateway"] = route.gateway
            else:
                spec["scope"] = _RT_SCOPE_LINK  # like `ip route add X dev Y`
            if route.onlink:
                spec["flags"] = _RTNH_F_ONLINK
            with _netlink_errors(what):
                await ipr.route(command, **spec)

    async def add_route(self, netns: Netns, route: Route) -> None:
        await self._route("add", netns, route)

    async def delete_route(self, netns: Netns, route: Route) -> None:
        await self._route("del", netns, route)

    async def list_routes(self, netns: Netns, table: int = MAIN_TABLE) -> list[Route]:
        async with self._rtnl(netns) as ipr:
            links = await self._dump_links(ipr, netns)
            names = {int(m["index"]): str(m.get("ifname")) for m in links}
            with _netlink_errors(f"list routes in {_where(netns)}"):
                msgs = [msg async for msg in await ipr.route("dump")]
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

    async def _rule(self, command: str, netns: Netns, rule: Rule) -> None:
        spec: dict[str, Any] = {
            "priority": rule.priority,
            "table": rule.table,
            "family": rule.family,
        }
        for key, cidr in (("src", rule.src), ("dst", rule.dst)):
            if cidr is not None:
                spec[key], spec[f"{key}_len"] = _split(cidr)
        if rule.iif is not None:
            spec["iifname"] = rule.iif
        async with self._rtnl(netns) as ipr:
            with _netlink_errors(f"{command} rule {rule.priority} in {_where(netns)}"):
                await ipr.rule(command, **spec)

    async def add_rule(self, netns: Netns, rule: Rule) -> None:
        await self._rule("add", netns, rule)

    async def delete_rule(self, netns: Netns, rule: Rule) -> None:
        await self._rule("del", netns, rule)

    async def list_rules(self, netns: Netns) -> list[Rule]:
        async with self._rtnl(netns) as ipr:
            with _netlink_errors(f"list rules in {_where(netns)}"):
                msgs = [msg async for msg in await ipr.rule("dump")]
        rules = []
        for msg in msgs:
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

    async def _neighbour(self, command: str, netns: Netns, neighbour: Neighbour) -> None:
        async with self._rtnl(netns) as ipr:
            index = await self._index(ipr, netns, neighbour.dev)
            spec: dict[str, Any] = {"dst": neighbour.ip, "ifindex": index}
            if command == "replace":
                spec.update(lladdr=neighbour.lladdr, state=_NUD_PERMANENT)
            what = f"{command} neighbour {neighbour.ip} on {neighbour.dev} in {_where(netns)}"
            with _netlink_errors(what):
                await ipr.neigh(command, **spec)

    async def add_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        await self._neighbour("replace", netns, neighbour)

    async def delete_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        await self._neighbour("del", netns, neighbour)
