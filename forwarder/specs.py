"""From a negotiated connection to what the data plane programs: this node, the other node as
the WIREGUARD mechanism describes it, the workload ends, and the specs of a remote vWire's side
(a device per vWire or a shared device).

Contract: pure functions of their arguments (no I/O); :func:`check_shared_answer` raises
``InvalidArgument`` naming the parameter of an answer that cannot be used. Used by
:class:`forwarder.xconnect.Xconnect`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from api.mechanisms.kernel import KernelMechanism
from api.mechanisms.wireguard import Reach, WireguardMechanism
from api.proto.connectioncontext_pb2 import IPContext
from forwarder.reach import NAT_KEEPALIVE, dial_address, ipv6_underlay, keepalive, path_mtu
from forwarder.shared import MAX_SPACES, SharedPeerSpec, SharedVWireSpec
from forwarder.vwire import (
    Attachment,
    NeighbourSpec,
    RemoteVWireSpec,
    RouteSpec,
    WireGuardPeerSpec,
)
from sdk.errors import InvalidArgument


@dataclass(frozen=True)
class Node:
    """Where this node's tunnels live: underlay address and interface (namespace None = own);
    ``advertised_ip`` is the address other sites dial ("" = ``underlay_ip``), ``reach`` what the
    mechanism says about the node (its ``node`` and ``site_ip`` are filled in from the above)."""

    name: str
    underlay_ip: str
    underlay_interface: str
    underlay_netns: str | None = None
    advertised_ip: str = ""
    reach: Reach = field(default_factory=Reach)

    @property
    def address(self) -> str:
        return self.advertised_ip or self.underlay_ip

    @property
    def own_reach(self) -> Reach:
        return replace(self.reach, node=self.name, site_ip=self.underlay_ip)


@dataclass(frozen=True)
class Peer:
    """The other node as its WIREGUARD parameters describe it."""

    public_key: str
    ip: str
    port: int
    reach: Reach


@dataclass(frozen=True)
class Path:
    """How this node reaches the other one: the endpoint it dials (None: it waits for the
    other's handshake), keepalive, the path's underlay MTU (None: unknown) and whether the
    tunnel runs over IPv6."""

    endpoint: tuple[str, int] | None
    keepalive: int | None
    path_mtu: int | None
    ipv6_underlay: bool


def _routes(routes: Any) -> tuple[RouteSpec, ...]:
    return tuple(RouteSpec(r.prefix, r.nextHop) for r in routes)


def client_attachment(mech: KernelMechanism, ip: IPContext) -> Attachment:
    """The client's end: its namespace and interface, ``src`` addresses and routes."""
    return Attachment(
        netns=mech.netns_url,
        ifname=mech.interface or None,
        addresses=tuple(ip.src_ip_addrs),
        routes=_routes(ip.src_routes),
        neighbours=tuple(NeighbourSpec(n.ip, n.hardware_address) for n in ip.ip_neighbors),
    )


def endpoint_attachment(mech: KernelMechanism, ip: IPContext) -> Attachment:
    """The endpoint's end: its namespace and interface, ``dst`` addresses and routes."""
    return Attachment(
        netns=mech.netns_url,
        ifname=mech.interface or None,
        addresses=tuple(ip.dst_ip_addrs),
        routes=_routes(ip.dst_routes),
    )


def check_shared_answer(far: WireguardMechanism, offered: bool) -> None:
    """InvalidArgument unless a shared-device answer can be used: offered, with the device's
    port to dial, in a space below :data:`MAX_SPACES` (each space is a device pair)."""
    field = "mechanism.parameters"
    if not offered:
        raise InvalidArgument(f"{field}[vwire_shared_space]", "a shared device was not offered")
    if not far.dst_port:
        raise InvalidArgument(f"{field}[dst_port]", "a shared device's answer needs its port")
    if far.shared_space is not None and far.shared_space >= MAX_SPACES:
        raise InvalidArgument(f"{field}[vwire_shared_space]",
                              f"must be below {MAX_SPACES} (got {far.shared_space})")


def prefixes(routes: Any) -> tuple[str, ...]:
    """The prefixes of an IPContext's routes."""
    return tuple(r.prefix for r in routes)


def shares(node: Node, sharing: bool, near: WireguardMechanism) -> bool:
    """Whether a connection offered ``near`` goes over a shared device: this node shares
    (``sharing``), so does the client side, and the client side can dial this node (a shared
    device learns its peer's port from the handshake)."""
    return (sharing and bool(near.src_shared_key)
            and dial_address(near.src, node.own_reach, node.address) is not None)


def path_to(node: Node, peer: Peer) -> Path:
    """How ``node`` reaches ``peer`` (see :class:`Path`)."""
    me = node.own_reach
    dial = dial_address(me, peer.reach, peer.ip)
    return Path(
        endpoint=(dial, peer.port) if dial and peer.port else None,
        keepalive=keepalive(me, peer.reach),
        path_mtu=path_mtu(me, peer.reach) or None,
        ipv6_underlay=ipv6_underlay(dial or "", peer.ip, node.underlay_ip),
    )


def shared_spec(
    node: Node, vid: str, workload: Attachment, peer: Peer, peer_addresses: tuple[str, ...],
    peer_routes: tuple[str, ...], space: int | None, mtu: int | None,
) -> SharedVWireSpec:
    """The side of a shared-device vWire; the side that knows the peer's port dials it and
    keeps the path open (keepalive: the first one starts the handshake at once)."""
    path = path_to(node, peer)
    return SharedVWireSpec(
        connection_id=vid,
        workload=workload,
        peer=SharedPeerSpec(
            peer.public_key, path.endpoint, peer_addresses, peer_routes,
            keepalive=(path.keepalive or NAT_KEEPALIVE) if path.endpoint else None),
        underlay_ifname=node.underlay_interface,
        underlay_netns=node.underlay_netns,
        space=space,
        mtu=mtu,
        path_mtu=path.path_mtu,
        ipv6_underlay=path.ipv6_underlay,
    )


def remote_spec(
    node: Node, vid: str, workload: Attachment, peer: Peer, peer_addresses: tuple[str, ...],
    port: int, private_key: str, mtu: int | None,
) -> RemoteVWireSpec:
    """The side of a vWire with its own device (key pair and port per connection)."""
    path = path_to(node, peer)
    return RemoteVWireSpec(
        connection_id=vid,
        workload=workload,
        peer=WireGuardPeerSpec(peer.public_key, path.endpoint, peer_addresses,
                               keepalive=path.keepalive),
        private_key=private_key,
        underlay_ifname=node.underlay_interface,
        underlay_netns=node.underlay_netns,
        listen_port=port,
        mtu=mtu,
        path_mtu=path.path_mtu,
        ipv6_underlay=path.ipv6_underlay,
    )
