"""The WIREGUARD mechanism: an encrypted tunnel between two nodes' forwarders.

Parameters (NSM's names): ``src_ip``/``src_port``/``src_public_key`` — the client-side node's
tunnel address (its external address when it is behind 1:1 NAT), UDP port and public key;
``dst_ip``/``dst_port``/``dst_public_key`` — the same for the endpoint-side node; ``MTU`` — the
tunnel MTU the endpoint side computed for the path (both ends use it). Private keys never travel.

Extension parameters (keys NSM does not use, all starting ``vwire_``), one set per side
(:class:`Reach`): ``vwire_<side>_node`` (the forwarder's name, for messages),
``vwire_<side>_site`` (the domain/cloud site: nodes of one site reach each other directly),
``vwire_<side>_site_ip`` (the node's address inside its site), ``vwire_<side>_nat`` (``none``,
``one-to-one`` or ``masquerade``: whether others can dial the node), ``vwire_<side>_underlay_mtu``
and ``vwire_<side>_wan_mtu`` (the node's underlay MTU, and the MTU it assumes for paths that
leave its site). A peer that sends none of them (NSM) is a node of the default site "" without
NAT whose MTUs are unknown.

Shared devices (extension): ``vwire_src_shared_key`` — the client-side node's public key for
tunnels it shares between connections, offered only by a forwarder that may share one (its
per-connection ``src_*`` stay, so the far side may still choose a device per vWire);
``vwire_shared_space`` — set by the endpoint side that chose to share: the address space (the
device pair between the two nodes, 0, 1, ...) this connection goes over; then ``dst_port`` and
``dst_public_key`` are that shared device's and the client side answers with its own shared
device for the endpoint's node in that space.

Ports, MTUs and spaces are decimal strings; :meth:`WireguardMechanism.parse` refuses any other
non-empty value, a NAT kind it does not know, an in-site address that is not an IP address and
text longer than 253 characters or not printable, with ``InvalidArgument`` naming the parameter
(it arrives from another node: it is input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import ip_address

from api.errors import InvalidArgument, quoted
from api.mechanisms import REMOTE
from api.proto.connection_pb2 import Mechanism

TYPE = "WIREGUARD"
SRC_IP, SRC_PORT, SRC_PUBLIC_KEY = "src_ip", "src_port", "src_public_key"
DST_IP, DST_PORT, DST_PUBLIC_KEY = "dst_ip", "dst_port", "dst_public_key"
MTU = "MTU"
SRC_SHARED_KEY, SHARED_SPACE = "vwire_src_shared_key", "vwire_shared_space"

NAT_NONE, NAT_ONE_TO_ONE, NAT_MASQUERADE = "none", "one-to-one", "masquerade"
NAT_KINDS = (NAT_NONE, NAT_ONE_TO_ONE, NAT_MASQUERADE)
_MAX_TEXT = 253


def _number(p: Mapping[str, str], key: str, field: str) -> int:
    value = p.get(key, "")
    if not value:
        return 0
    # isdigit() alone also accepts digits int() refuses, e.g. '²'
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise InvalidArgument(
            f"{field}.parameters[{key}]", f"must be a decimal number (got {quoted(value)})"
        )
    return int(value)


def _text(p: Mapping[str, str], key: str, field: str) -> str:
    value = p.get(key, "")
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise InvalidArgument(
            f"{field}.parameters[{key}]",
            f"must be at most {_MAX_TEXT} printable characters (got {quoted(value)})",
        )
    return value


@dataclass(frozen=True)
class Reach:
    """How one side's node is reached and what its underlay carries (extension parameters)."""

    node: str = ""
    site: str = ""
    site_ip: str = ""
    nat: str = NAT_NONE
    underlay_mtu: int = 0
    wan_mtu: int = 0

    @classmethod
    def parse(cls, p: Mapping[str, str], side: str, field: str) -> Reach:
        nat = p.get(f"vwire_{side}_nat", "") or NAT_NONE
        if nat not in NAT_KINDS:
            raise InvalidArgument(
                f"{field}.parameters[vwire_{side}_nat]",
                f"must be one of {', '.join(NAT_KINDS)} (got {quoted(nat)})",
            )
        site_ip = _text(p, f"vwire_{side}_site_ip", field)
        if site_ip:
            try:
                site_ip = str(ip_address(site_ip))
            except ValueError:
                raise InvalidArgument(f"{field}.parameters[vwire_{side}_site_ip]",
                                      f"must be an IP address (got {quoted(site_ip)})") from None
        return cls(
            node=_text(p, f"vwire_{side}_node", field),
            site=_text(p, f"vwire_{side}_site", field),
            site_ip=site_ip,
            nat=nat,
            underlay_mtu=_number(p, f"vwire_{side}_underlay_mtu", field),
            wan_mtu=_number(p, f"vwire_{side}_wan_mtu", field),
        )

    def parameters(self, side: str) -> dict[str, str]:
        values = {
            f"vwire_{side}_node": self.node,
            f"vwire_{side}_site": self.site,
            f"vwire_{side}_site_ip": self.site_ip,
            f"vwire_{side}_nat": self.nat if self.nat != NAT_NONE else "",
            f"vwire_{side}_underlay_mtu": str(self.underlay_mtu) if self.underlay_mtu else "",
            f"vwire_{side}_wan_mtu": str(self.wan_mtu) if self.wan_mtu else "",
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class WireguardMechanism:
    """Typed view of a WIREGUARD mechanism."""

    src_ip: str = ""
    src_port: int = 0
    src_public_key: str = ""
    dst_ip: str = ""
    dst_port: int = 0
    dst_public_key: str = ""
    mtu: int = 0
    src: Reach = field(default_factory=Reach)
    dst: Reach = field(default_factory=Reach)
    src_shared_key: str = ""
    shared_space: int | None = None  # None: a device per vWire

    @classmethod
    def parse(cls, mechanism: Mechanism, field: str = "mechanism") -> WireguardMechanism:
        """The typed view; a number parameter (port, MTU) that is present but not a decimal
        number, or an unknown NAT kind, raises InvalidArgument naming
        ``<field>.parameters[<key>]``."""
        p = mechanism.parameters
        return cls(
            src_ip=p.get(SRC_IP, ""),
            src_port=_number(p, SRC_PORT, field),
            src_public_key=p.get(SRC_PUBLIC_KEY, ""),
            dst_ip=p.get(DST_IP, ""),
            dst_port=_number(p, DST_PORT, field),
            dst_public_key=p.get(DST_PUBLIC_KEY, ""),
            mtu=_number(p, MTU, field),
            src=Reach.parse(p, "src", field),
            dst=Reach.parse(p, "dst", field),
            src_shared_key=_text(p, SRC_SHARED_KEY, field),
            shared_space=_number(p, SHARED_SPACE, field) if p.get(SHARED_SPACE) else None,
        )

    def with_destination(
        self, ip: str, port: int, public_key: str, mtu: int, reach: Reach | None = None
    ) -> WireguardMechanism:
        return replace(self, dst_ip=ip, dst_port=port, dst_public_key=public_key, mtu=mtu,
                       dst=self.dst if reach is None else reach)

    def to_proto(self) -> Mechanism:
        mechanism = Mechanism(cls=REMOTE, type=TYPE)
        values = {
            SRC_IP: self.src_ip,
            SRC_PORT: str(self.src_port) if self.src_port else "",
            SRC_PUBLIC_KEY: self.src_public_key,
            DST_IP: self.dst_ip,
            DST_PORT: str(self.dst_port) if self.dst_port else "",
            DST_PUBLIC_KEY: self.dst_public_key,
            MTU: str(self.mtu) if self.mtu else "",
            SRC_SHARED_KEY: self.src_shared_key,
            SHARED_SPACE: "" if self.shared_space is None else str(self.shared_space),
        }
        mechanism.parameters.update({k: v for k, v in values.items() if v})
        mechanism.parameters.update(self.src.parameters("src"))
        mechanism.parameters.update(self.dst.parameters("dst"))
        return mechanism


def is_wireguard(mechanism: Mechanism) -> bool:
    return mechanism.type == TYPE
