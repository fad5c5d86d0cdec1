"""Typed input of vWire programming: what one connection needs on this node.

These are plain values, built by the forwarder's chain from an NSM ``Connection`` (the KERNEL
mechanism's ``name``/``inodeURL``, the IPContext's ``src_ip_addrs``/``dst_ip_addrs``/
``src_routes``/``dst_routes``/neighbours and the WIREGUARD mechanism's keys and endpoints).
Nothing here is checked; :mod:`forwarder.vwire.validate` does that before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RouteSpec:
    """A route to ``prefix``; an empty ``next_hop`` means "via the other end of the vWire"."""

    prefix: str
    next_hop: str = ""


@dataclass(frozen=True)
class NeighbourSpec:
    """A static neighbour entry: ``ip`` is at MAC ``lladdr`` on the vWire interface."""

    ip: str
    lladdr: str


@dataclass(frozen=True)
class Attachment:
    """One end of a vWire inside a workload's namespace.

    ``netns``: a namespace path or ``file://``/``inode://`` URL (NSM ``inodeURL``);
    ``ifname``: the interface name the workload sees (NSM mechanism ``name``), generated if None;
    ``addresses``: interface CIDRs; ``routes``: what this side routes into the vWire.
    """

    netns: str
    ifname: str | None = None
    addresses: tuple[str, ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    neighbours: tuple[NeighbourSpec, ...] = ()


@dataclass(frozen=True)
class LocalVWireSpec:
    """Both ends on this node (KERNEL mechanism on both sides): one veth pair.

    ``client`` gets ``src_ip_addrs``/``src_routes``, ``endpoint`` gets ``dst_ip_addrs``/
    ``dst_routes``; ``mtu`` is the connection context's MTU (None: 1500).
    """

    connection_id: str
    client: Attachment
    endpoint: Attachment
    mtu: int | None = None


@dataclass(frozen=True)
class WireGuardPeerSpec:
    """The other node's side of a remote vWire.

    ``addresses`` are the other workload's interface CIDRs; together with this side's routes they
    become the peer's allowed IPs.
    """

    public_key: str
    endpoint: tuple[str, int] | None
    addresses: tuple[str, ...]
    keepalive: int | None = None


@dataclass(frozen=True)
class RemoteVWireSpec:
    """This node's side of a vWire between nodes (WIREGUARD mechanism).

    The WireGuard interface keeps its UDP socket in ``underlay_netns`` (None: the forwarder's
    own) and is moved into ``workload.netns``. ``underlay_ifname`` is the interface whose MTU the
    tunnel MTU derives from; ``path_mtu`` (when known) is the underlay MTU of the whole path to
    the other node, which may be smaller; ``mtu`` caps the result (the connection context's MTU).
    ``ipv6_underlay`` says which overhead applies (None: from the peer's endpoint; IPv6 when it
    has none).
    """

    connection_id: str
    workload: Attachment
    peer: WireGuardPeerSpec
    private_key: str
    underlay_ifname: str
    underlay_netns: str | None = None
    listen_port: int = 0
    mtu: int | None = None
    path_mtu: int | None = None
    ipv6_underlay: bool | None = None
