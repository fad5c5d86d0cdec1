"""An in-memory :class:`~forwarder.kernel.port.KernelPort` for fast unit tests.

It models what the data plane relies on, with the kernel's error behaviour:

* namespaces are known paths (``add_netns``); ``None`` is the forwarder's own namespace; using an
  unknown path raises ``NotFound`` (nothing is ever created implicitly);
* links have a unique name per namespace (``AlreadyExists`` otherwise), veth ends know their
  peer, deleting one end deletes both, moving a link drops its addresses and routes;
* addresses are unique per link; adding one installs the connected route like the kernel;
* routes are unique per (table, dst); a gateway must be covered by a connected prefix or a
  link-scope route on the same device, unless ``onlink`` (the kernel says ENETUNREACH);
* deleting a link removes its addresses, routes and neighbours; rules stay (as in the kernel);
* only ``veth`` can be created; other kinds exist via :meth:`FakeKernel.add_link` (test helper).

Test helpers (not part of the port): :meth:`add_netns`, :meth:`remove_netns`, :meth:`add_link`,
:meth:`fail_on` (inject an error into the n-th call of a method), :meth:`count_traffic`,
:meth:`snapshot` (everything, for "nothing left behind" assertions) and ``calls`` (a log).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import ip_address, ip_interface, ip_network

from sdk.errors import (
    AlreadyExists,
    DataplaneError,
    FabricError,
    InvalidArgument,
    NotFound,
)

from .batch import add_in_order, delete_every
from .nsref import InodeRef, PathRef, parse_ns_ref
from .port import MAIN_TABLE, Address, Entry, Link, LinkStats, Neighbour, Netns, Route, Rule

_MAX_IFNAME = 15


@dataclass
class _FakeLink:
    name: str
    index: int
    kind: str | None
    mtu: int = 1500
    up: bool = False
    alias: str | None = None
    mac: str | None = None
    peer: tuple[Netns, str] | None = None
    addresses: list[str] = field(default_factory=list)
    stats: LinkStats = field(default_factory=lambda: LinkStats(0, 0, 0, 0))


@dataclass
class _FakeNs:
    links: dict[str, _FakeLink] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    connected: list[Route] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)


class FakeKernel:
    """In-memory kernel; see the module docstring for what it models."""

    def __init__(self) -> None:
        self._ns: dict[Netns, _FakeNs] = {None: _FakeNs()}
        self._inodes: dict[str, int] = {}
        self._counter = itertools.count(2)
        self._failures: dict[str, tuple[int, FabricError]] = {}
        self.calls: list[str] = []
        self.sysctls: dict[str, dict[str, str]] = {}  # by namespace made here
        self.add_link(None, "lo", None, up=True)

    # -- test helpers ----------------------------------------------------------------------------

    def add_netns(self, path: str) -> str:
        """Make a namespace exist at ``path`` (with an ``lo``), returning the path."""
        if path in self._ns:
            raise AlreadyExists(f"namespace {path} exists")
        self._ns[path] = _FakeNs()
        self._inodes[path] = 4026530000 + next(self._counter)
        self.add_link(path, "lo", None, up=True)
        return path

    def remove_netns(self, path: str) -> None:
        """Delete a namespace with everything in it (veth peers elsewhere vanish too)."""
        for link in list(self._ns[path].links.values()):
            if link.peer is not None:
                self._drop_link(*link.peer)
        del self._ns[path]

    def add_link(
        self, netns: Netns, name: str, kind: str | None, *, up: bool = False, mtu: int = 1500
    ) -> None:
        """Create a link of any kind directly (stands in for tun/wireguard made by others)."""
        ns = self._space(netns)
        if name in ns.links:
            raise AlreadyExists(f"interface {name} exists in {netns}")
        index = next(self._counter)
        mac = f"02:00:00:00:{index // 256:02x}:{index % 256:02x}"
        ns.links[name] = _FakeLink(name, index, kind, mtu=mtu, up=up, mac=mac)

    def fail_on(self, method: str, error: FabricError | None = None, nth: int = 1) -> None:
        """Make the ``nth`` next call of ``method`` raise ``error`` (default: DataplaneError)."""
        self._failures[method] = (nth, error or DataplaneError(f"injected failure in {method}"))

    def count_traffic(self, netns: Netns, name: str, stats: LinkStats) -> None:
        """Set the counters of a link."""
        self._get(netns, name).stats = stats

    def snapshot(self) -> dict[Netns, dict[str, object]]:
        """A comparable picture of every namespace: links, addresses, routes, rules, neighbours."""
        return {
            path: {
                "links": sorted(
                    (n, link.kind, link.mtu, link.up, link.alias, tuple(link.addresses))
                    for n, link in ns.links.items()
                ),
                "routes": sorted(map(repr, ns.routes)),
                "rules": sorted(map(repr, ns.rules)),
                "neighbours": sorted(map(repr, ns.neighbours)),
            }
            for path, ns in self._ns.items()
        }

    # -- internals -------------------------------------------------------------------------------

    def _call(self, method: str, *args: object) -> None:
        self.calls.append(f"{method}{args}")
        pending = self._failures.get(method)
        if pending is None:
            return
        nth, error = pending
        if nth > 1:
            self._failures[method] = (nth - 1, error)
            return
        del self._failures[method]
        raise error

    def _space(self, netns: Netns) -> _FakeNs:
        try:
            return self._ns[netns]
        except KeyError:
            raise NotFound(f"network namespace {netns} does not exist") from None

    def _get(self, netns: Netns, name: str) -> _FakeLink:
        link = self._space(netns).links.get(name)
        if link is None:
            raise NotFound(f"interface {name} does not exist in {netns}")
        return link

    def _drop_link(self, netns: Netns, name: str) -> None:
        ns = self._ns.get(netns)
        if ns is None or name not in ns.links:
            return
        del ns.links[name]
        self._drop_routes(ns, name)
        ns.neighbours = [n for n in ns.neighbours if n.dev != name]

    @staticmethod
    def _drop_routes(ns: _FakeNs, name: str) -> None:
        """The routes through ``name`` go (as with the link, or with it going down)."""
        ns.routes = [r for r in ns.routes if r.dev != name]
        ns.connected = [r for r in ns.connected if r.dev != name]

    def _check_rename(self, netns: Netns, link: _FakeLink, new_name: str) -> None:
        """Refuse ``new_name`` for ``link`` as the kernel does: a bad name, a link that is up,
        a name taken."""
        self._check_name(new_name)
        if link.up:
            raise DataplaneError(f"rename {link.name}: Device or resource busy (errno 16)")
        if new_name in self._space(netns).links:
            raise AlreadyExists(f"rename {link.name} to {new_name}: File exists (errno 17)")

    @staticmethod
    def _check_name(name: str) -> None:
        # Like the kernel: at most 15 bytes (not characters), no '/', ':', whitespace or NUL.
        if not name or len(name.encode()) > _MAX_IFNAME or any(c in name for c in "/: \t\n\0"):
            raise InvalidArgument("ifname", f"the kernel rejected the name {name!r}")

    # -- namespaces ------------------------------------------------------------------------------

    async def resolve_netns(self, ref: str) -> str:
        parsed = parse_ns_ref(ref)
        if isinstance(parsed, PathRef):
            if parsed.path not in self._ns:
                raise NotFound(f"netns: network namespace {parsed.path} does not exist")
            return parsed.path
        assert isinstance(parsed, InodeRef)
        for path, ino in self._inodes.items():
            if ino == parsed.ino and path in self._ns:
                return path
        raise NotFound(f"netns: no network namespace has inode {parsed.dev}/{parsed.ino}")

    async def list_namespaces(self) -> list[str]:
        return [path for path in self._ns if path is not None]

    async def create_namespace(self, sysctls: Mapping[str, str]) -> str:
        self._call("create_namespace")
        path = f"/proc/{os.getpid()}/fd/{next(self._counter)}"
        self.add_netns(path)
        self.sysctls[path] = dict(sysctls)
        return path

    async def delete_namespace(self, path: str) -> None:
        self._call("delete_namespace", path)
        if path in self._ns:
            self.remove_netns(path)
        self.sysctls.pop(path, None)

    # -- links -----------------------------------------------------------------------------------

    async def create_veth(self, name: str, netns: Netns, peer_name: str, peer_netns: Netns) -> None:
        self._call("create_veth", name, netns, peer_name, peer_netns)
        ns, peer_ns = self._space(netns), self._space(peer_netns)
        self._check_name(name)
        self._check_name(peer_name)
        if (
            name in ns.links
            or peer_name in peer_ns.links
            or (netns == peer_netns and name == peer_name)
        ):
            raise AlreadyExists(f"create veth {name}/{peer_name}: File exists (errno 17)")
        self.add_link(netns, name, "veth")
        self.add_link(peer_netns, peer_name, "veth")
        ns.links[name].peer = (peer_netns, peer_name)
        peer_ns.links[peer_name].peer = (netns, name)

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
        self._call("set_link", netns, name)
        link = self._get(netns, name)
        if mtu is not None and not 68 <= mtu <= 65535:
            raise InvalidArgument(f"set mtu of {name}", "the kernel rejected the value")
        if new_name is not None and new_name != name:
            self._check_rename(netns, link, new_name)
        link.mtu = mtu if mtu is not None else link.mtu
        link.alias = alias if alias is not None else link.alias
        link.up = up if up is not None else link.up
        link.mac = mac if mac is not None else link.mac
        if new_name is not None and new_name != name:
            self._rename(netns, link, new_name)

    def _rename(self, netns: Netns, link: _FakeLink, new_name: str) -> None:
        ns = self._space(netns)
        del ns.links[link.name]
        ns.routes = [replace(r, dev=new_name) if r.dev == link.name else r for r in ns.routes]
        ns.connected = [replace(r, dev=new_name) if r.dev == link.name else r for r in ns.connected]
        if link.peer is not None:
            self._get(*link.peer).peer = (netns, new_name)
        link.name = new_name
        ns.links[new_name] = link

    async def reset_link(self, netns: Netns, name: str, *, new_name: str,
                         alias: str) -> LinkStats:
        self._call("reset_link", netns, name)
        link = self._get(netns, name)
        link.up = False  # first, as the kernel port does: a refused name leaves it down
        if new_name != name:
            self._check_rename(netns, link, new_name)
        link.addresses.clear()
        self._drop_routes(self._space(netns), name)
        link.alias = alias
        if new_name != name:
            self._rename(netns, link, new_name)
        return link.stats

    async def move_link(self, netns: Netns, name: str, target_netns: Netns) -> None:
        self._call("move_link", netns, name, target_netns)
        link = self._get(netns, name)
        target = self._space(target_netns)
        if name in target.links:
            raise AlreadyExists(f"move {name}: File exists (errno 17)")
        self._drop_link(netns, name)
        link.addresses.clear()
        link.up = False
        target.links[name] = link
        if link.peer is not None:
            self._get(*link.peer).peer = (target_netns, name)

    async def open_tun(self, netns: Netns, name: str, *, packet_info: bool,
                       persist: bool = False, mtu: int | None = None,
                       alias: str | None = None) -> int | None:
        """A TUN link (kind ``tun``, MTU ``mtu`` or 1500, ``alias``) and, unless ``persist``, a
        real descriptor (of ``/dev/null``) for the caller to close."""
        self._call("open_tun", netns, name, packet_info, persist)
        self._check_name(name)
        if name in self._space(netns).links:
            raise AlreadyExists(f"create TUN device {name}: an interface of that name exists")
        if mtu is not None and not 68 <= mtu <= 65535:
            raise InvalidArgument(f"set mtu of {name}", "the kernel rejected the value")
        self.add_link(netns, name, "tun", mtu=mtu or 1500)
        self._space(netns).links[name].alias = alias
        return None if persist else os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    async def delete_link(self, netns: Netns, name: str) -> None:
        self._call("delete_link", netns, name)
        link = self._get(netns, name)
        self._drop_link(netns, name)
        if link.peer is not None:
            self._drop_link(*link.peer)

    @staticmethod
    def _view(link: _FakeLink) -> Link:
        return Link(link.name, link.index, link.kind, link.mtu, link.up, link.alias, link.mac)

    async def get_link(self, netns: Netns, name: str) -> Link:
        return self._view(self._get(netns, name))

    async def link_mtu(self, netns: Netns, name: str) -> int:
        return self._view(self._get(netns, name)).mtu

    async def list_links(self, netns: Netns, alias_prefix: str | None = None) -> list[Link]:
        links = [self._view(link) for link in self._space(netns).links.values()]
        if alias_prefix is None:
            return links
        return [link for link in links if (link.alias or "").startswith(alias_prefix)]

    async def link_stats(self, netns: Netns, name: str) -> LinkStats:
        return self._get(netns, name).stats

    # -- addresses -------------------------------------------------------------------------------

    async def add_address(self, netns: Netns, name: str, cidr: str) -> None:
        self._call("add_address", netns, name, cidr)
        link = self._get(netns, name)
        iface = ip_interface(cidr)
        if any(ip_interface(a).ip == iface.ip for a in link.addresses):
            raise AlreadyExists(f"add address {cidr} on {name}: File exists (errno 17)")
        link.addresses.append(str(iface))
        self._space(netns).connected.append(Route(str(iface.network), name))

    async def delete_address(self, netns: Netns, name: str, cidr: str) -> None:
        self._call("delete_address", netns, name, cidr)
        link = self._get(netns, name)
        iface = str(ip_interface(cidr))
        if iface not in link.addresses:
            raise NotFound(f"delete address {cidr} on {name}: no such address (errno 99)")
        link.addresses.remove(iface)
        ns = self._space(netns)
        ns.connected.remove(Route(str(ip_interface(cidr).network), name))

    async def list_addresses(self, netns: Netns, name: str) -> list[str]:
        return list(self._get(netns, name).addresses)

    # -- routes ----------------------------------------------------------------------------------

    async def add_route(self, netns: Netns, route: Route) -> None:
        self._call("add_route", netns, route)
        ns = self._space(netns)
        self._get(netns, route.dev)
        dst = ip_network(route.dst)
        if any(ip_network(r.dst) == dst and r.table == route.table for r in ns.routes):
            raise AlreadyExists(f"add route {route.dst}: File exists (errno 17)")
        if route.gateway is not None and not route.onlink:
            gateway = ip_address(route.gateway)
            reachable = [
                r
                for r in ns.connected + ns.routes
                if r.dev == route.dev
                and r.gateway is None
                and gateway.version == ip_network(r.dst).version
                and gateway in ip_network(r.dst)
            ]
            if not reachable:
                raise DataplaneError(
                    f"add route {route.dst} via {route.gateway}: Network is unreachable (errno 101)"
                )
        ns.routes.append(replace(route, dst=str(dst)))

    async def delete_route(self, netns: Netns, route: Route) -> None:
        self._call("delete_route", netns, route)
        ns = self._space(netns)
        normal = replace(route, dst=str(ip_network(route.dst)))
        if normal not in ns.routes:
            raise NotFound(f"delete route {route.dst}: No such process (errno 3)")
        ns.routes.remove(normal)

    async def list_routes(self, netns: Netns, table: int = MAIN_TABLE) -> list[Route]:
        return [r for r in self._space(netns).routes if r.table == table]

    # -- rules -----------------------------------------------------------------------------------

    async def add_rule(self, netns: Netns, rule: Rule) -> None:
        self._call("add_rule", netns, rule)
        ns = self._space(netns)
        if rule in ns.rules:
            raise AlreadyExists(f"add rule {rule.priority}: File exists (errno 17)")
        ns.rules.append(rule)

    async def delete_rule(self, netns: Netns, rule: Rule) -> None:
        self._call("delete_rule", netns, rule)
        ns = self._space(netns)
        if rule not in ns.rules:
            raise NotFound(f"delete rule {rule.priority}: No such file or directory (errno 2)")
        ns.rules.remove(rule)

    async def list_rules(self, netns: Netns) -> list[Rule]:
        return list(self._space(netns).rules)

    # -- neighbours ------------------------------------------------------------------------------

    async def add_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        self._call("add_neighbour", netns, neighbour)
        ns = self._space(netns)
        self._get(netns, neighbour.dev)
        ns.neighbours = [
            n for n in ns.neighbours if (n.dev, n.ip) != (neighbour.dev, neighbour.ip)
        ] + [neighbour]

    async def delete_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        self._call("delete_neighbour", netns, neighbour)
        ns = self._space(netns)
        found = [n for n in ns.neighbours if (n.dev, n.ip) == (neighbour.dev, neighbour.ip)]
        if not found:
            raise NotFound(f"delete neighbour {neighbour.ip}: No such file or directory (errno 2)")
        ns.neighbours.remove(found[0])

    async def add_all(self, netns: Netns, entries: Sequence[Entry]) -> None:
        self._call("add_all", netns, len(entries))
        await add_in_order(entries, lambda e: self._entry("add", netns, e),
                           lambda e: self._entry("delete", netns, e))

    async def delete_all(self, netns: Netns, entries: Sequence[Entry]) -> None:
        self._call("delete_all", netns, len(entries))
        await delete_every(entries, lambda e: self._entry("delete", netns, e))

    async def _entry(self, command: str, netns: Netns, entry: Entry) -> None:
        """``add_*`` or ``delete_*`` of one entry, as a caller of that method would."""
        if isinstance(entry, Address):
            await getattr(self, f"{command}_address")(netns, entry.dev, entry.cidr)
        else:
            kind = {Route: "route", Rule: "rule", Neighbour: "neighbour"}[type(entry)]
            await getattr(self, f"{command}_{kind}")(netns, entry)
