"""The kernel port: the typed contract between the data plane and the Linux networking stack.

Everything the forwarder does to the kernel goes through :class:`KernelPort`. Two
implementations exist: :class:`forwarder.kernel.netlink.NetlinkKernel` (real rtnetlink through
pyroute2) and :class:`forwarder.kernel.fake.FakeKernel` (in memory, for unit tests).

Conventions shared by every method:

* A namespace (``Netns``) is the path of a network-namespace file (``/var/run/netns/NAME`` or
  ``/proc/PID/ns/net``); ``None`` means the namespace of the forwarder process itself. Paths are
  never created: a missing one raises :class:`sdk.errors.NotFound`. A path must name a workload's
  namespace: the real port refuses the forwarder's own and the host's by path
  (``PermissionDenied``) unless allowed (see :class:`forwarder.kernel.netns.NamespaceGuard`).
* Interfaces are addressed by name inside their namespace.
* Addresses are interface CIDRs (``"10.0.0.1/32"``, ``"fd00::1/128"``); route destinations are
  network CIDRs (``"10.0.0.0/24"``).
* Failures are :mod:`sdk.errors` exceptions: ``AlreadyExists`` (name or entry taken), ``NotFound``
  (no such namespace, interface, address, route, rule), ``FailedPrecondition`` (the kernel lacks a
  feature, e.g. a link kind), ``InvalidArgument`` (the kernel rejected a value),
  ``DataplaneError`` (anything else). A failed call changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Netns = str | None
"""A network-namespace file path, or ``None`` for the forwarder's own namespace."""

MAIN_TABLE = 254
"""The kernel's main routing table."""


@dataclass(frozen=True)
class Link:
    """One network interface as seen in its namespace."""

    name: str
    index: int
    kind: str | None  # "veth", "tun", "wireguard", ... (None for devices without a kind, e.g. lo)
    mtu: int
    up: bool  # administratively up
    alias: str | None  # the ifalias; the data plane uses it as its ownership marker
    mac: str | None


@dataclass(frozen=True)
class LinkStats:
    """Byte and packet counters of one interface."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True)
class Route:
    """A unicast route: ``dst`` through ``dev`` (optionally via ``gateway``) in ``table``.

    ``onlink`` tells the kernel the gateway is reachable on ``dev`` without a covering prefix.
    """

    dst: str
    dev: str
    gateway: str | None = None
    table: int = MAIN_TABLE
    onlink: bool = False


@dataclass(frozen=True)
class Rule:
    """A policy-routing rule: packets matching ``src``/``dst``/``iif`` look up ``table``."""

    priority: int
    table: int
    family: int  # socket.AF_INET or socket.AF_INET6
    src: str | None = None
    dst: str | None = None
    iif: str | None = None


@dataclass(frozen=True)
class Neighbour:
    """A permanent neighbour (ARP/NDP) entry: ``ip`` is at ``lladdr`` on ``dev``."""

    dev: str
    ip: str
    lladdr: str


@dataclass(frozen=True)
class Address:
    """An interface address: ``cidr`` on ``dev`` (an entry of :meth:`KernelPort.add_all`)."""

    dev: str
    cidr: str


Entry = Address | Route | Rule | Neighbour
"""What :meth:`KernelPort.add_all` adds and :meth:`KernelPort.delete_all` removes."""


class KernelPort(Protocol):
    """The netlink operations the data plane needs, and nothing more (see module docstring)."""

    async def resolve_netns(self, ref: str) -> str:
        """Turn a namespace reference from a request into the path of a workload's namespace.

        Accepts a path (``/var/run/netns/x``, ``/proc/PID/ns/net``), a ``file://`` URL of such a
        path (NSM's ``inodeURL``) or ``inode://<dev>/<ino>`` (looked up among the named
        namespaces and ``/proc/PID/ns/net``). Raises ``InvalidArgument`` for a malformed
        reference or a file that is not a network namespace (a FIFO, a device, ...: never
        opened for real, never blocking), ``NotFound`` when no such namespace exists, and
        ``PermissionDenied`` (:class:`forwarder.kernel.netns.NamespaceRefused`) for the
        forwarder's own or the host's namespace unless the forwarder allows them.
        """
        ...

    async def list_namespaces(self) -> list[str]:
        """Every workload namespace visible to the forwarder, once each (named preferred): not
        its own, nor the host's unless allowed (see :meth:`resolve_netns`)."""
        ...

    async def create_namespace(self, sysctls: Mapping[str, str]) -> str:
        """A new namespace held by this process alone, with ``lo`` up and ``sysctls``
        (``net.ipv4.ip_forward`` -> ``1``) set inside; return its path, ``/proc/<pid>/fd/<n>``.
        It has no name and no mount: it ends with :meth:`delete_namespace` or with the process
        (a crash included), the kernel removing every device in it (and veth pairs with an end
        inside). On any failure nothing is left."""
        ...

    async def delete_namespace(self, path: str) -> None:
        """Let go of a namespace :meth:`create_namespace` made (idempotent)."""
        ...

    async def create_veth(self, name: str, netns: Netns, peer_name: str, peer_netns: Netns) -> None:
        """Create a veth pair: ``name`` in ``netns``, ``peer_name`` in ``peer_netns``; both DOWN."""
        ...

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
        """Change the given properties of an interface (``None`` leaves a property alone);
        ``mac`` is its link-layer address (``02:…``)."""
        ...

    async def reset_link(self, netns: Netns, name: str, *, new_name: str,
                         alias: str) -> LinkStats:
        """Bring an interface down, remove every address from it (its routes go with the link
        going down), rename it ``new_name`` and mark it ``alias``; its counters then, which the
        kernel cannot reset. A failure may leave it down with some of its addresses."""
        ...

    async def move_link(self, netns: Netns, name: str, target_netns: Netns) -> None:
        """Move an interface into ``target_netns`` (its addresses and routes are dropped)."""
        ...

    async def open_tun(self, netns: Netns, name: str, *, packet_info: bool,
                       persist: bool = False, mtu: int | None = None,
                       alias: str | None = None) -> int | None:
        """Create TUN device ``name`` in ``netns``, DOWN (``packet_info``: packets carry the
        4-byte header, else ``IFF_NO_PI``), with ``mtu`` and ``alias`` when given (set in the
        same call; if that fails, no device is left). Returns its file descriptor, which the
        caller owns and closes (the device ends with the last descriptor), or, with
        ``persist``, None: the device then stays until :meth:`delete_link`. ``AlreadyExists``
        when the name is taken."""
        ...

    async def delete_link(self, netns: Netns, name: str) -> None:
        """Delete an interface (for veth, both ends) with its addresses, routes and neighbours."""
        ...

    async def get_link(self, netns: Netns, name: str) -> Link:
        """Describe one interface."""
        ...

    async def link_mtu(self, netns: Netns, name: str) -> int:
        """One interface's MTU (cheaper than :meth:`get_link`); NotFound when it is absent."""
        ...

    async def list_links(self, netns: Netns, alias_prefix: str | None = None) -> list[Link]:
        """Interfaces of a namespace (only those whose alias starts with ``alias_prefix``)."""
        ...

    async def link_stats(self, netns: Netns, name: str) -> LinkStats:
        """Current counters of an interface."""
        ...

    async def add_address(self, netns: Netns, name: str, cidr: str) -> None:
        """Add an address (IPv6 without duplicate address detection, usable at once)."""
        ...

    async def delete_address(self, netns: Netns, name: str, cidr: str) -> None:
        """Remove an address."""
        ...

    async def list_addresses(self, netns: Netns, name: str) -> list[str]:
        """Addresses of an interface as CIDRs (IPv6 link-local ones excluded)."""
        ...

    async def add_route(self, netns: Netns, route: Route) -> None:
        """Add a route."""
        ...

    async def delete_route(self, netns: Netns, route: Route) -> None:
        """Remove a route."""
        ...

    async def list_routes(self, netns: Netns, table: int = MAIN_TABLE) -> list[Route]:
        """Unicast routes of a table that were added by someone (not by the kernel itself)."""
        ...

    async def add_rule(self, netns: Netns, rule: Rule) -> None:
        """Add a policy-routing rule."""
        ...

    async def delete_rule(self, netns: Netns, rule: Rule) -> None:
        """Remove a policy-routing rule."""
        ...

    async def list_rules(self, netns: Netns) -> list[Rule]:
        """Rules that point at a table other than local/main/default."""
        ...

    async def add_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        """Add (or replace) a permanent neighbour entry."""
        ...

    async def delete_neighbour(self, netns: Netns, neighbour: Neighbour) -> None:
        """Remove a neighbour entry."""
        ...

    async def add_all(self, netns: Netns, entries: Sequence[Entry]) -> None:
        """Add ``entries`` in their order, each as its ``add_*`` method would, all or none: when
        one fails, the ones this call added are removed again (newest first) and that failure
        is raised. A neighbour entry replaces one that was there (it counts as added). The real
        port hands the whole list to the namespace's worker at once."""
        ...

    async def delete_all(self, netns: Netns, entries: Sequence[Entry]) -> None:
        """Remove ``entries``, each as its ``delete_*`` method would; an entry already gone is
        skipped; the first other failure is raised once every entry was tried."""
        ...
