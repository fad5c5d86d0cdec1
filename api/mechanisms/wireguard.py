"""The WIREGUARD mechanism: an encrypted tunnel between two nodes' forwarders.

Parameters (NSM's names): ``src_ip``/``src_port``/``src_public_key`` — the client-side node's
underlay address, UDP port and public key; ``dst_ip``/``dst_port``/``dst_public_key`` — the same
for the endpoint-side node; ``MTU`` — the tunnel MTU the side that set it computed. Private keys
never travel. Ports and MTU are decimal strings; :meth:`WireguardMechanism.parse` refuses any
other non-empty value with ``InvalidArgument`` (it arrives from another node: it is input).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from api.errors import InvalidArgument, quoted
from api.mechanisms import REMOTE
from api.proto.connection_pb2 import Mechanism

TYPE = "WIREGUARD"
SRC_IP, SRC_PORT, SRC_PUBLIC_KEY = "src_ip", "src_port", "src_public_key"
DST_IP, DST_PORT, DST_PUBLIC_KEY = "dst_ip", "dst_port", "dst_public_key"
MTU = "MTU"


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

    @classmethod
    def parse(cls, mechanism: Mechanism, field: str = "mechanism") -> WireguardMechanism:
        """The typed view; a number parameter (port, MTU) that is present but not a decimal
        number raises InvalidArgument naming ``<field>.parameters[<key>]``."""
        p = mechanism.parameters

        def number(key: str) -> int:
            value = p.get(key, "")
            if not value:
                return 0
            # isdigit() alone also accepts digits int() refuses, e.g. '²'
            if not (value.isascii() and value.isdigit()) or len(value) > 10:
                raise InvalidArgument(
                    f"{field}.parameters[{key}]", f"must be a decimal number (got {quoted(value)})"
                )
            return int(value)

        return cls(
            src_ip=p.get(SRC_IP, ""),
            src_port=number(SRC_PORT),
            src_public_key=p.get(SRC_PUBLIC_KEY, ""),
            dst_ip=p.get(DST_IP, ""),
            dst_port=number(DST_PORT),
            dst_public_key=p.get(DST_PUBLIC_KEY, ""),
            mtu=number(MTU),
        )

    def with_destination(self, ip: str, port: int, public_key: str, mtu: int) -> WireguardMechanism:
        return replace(self, dst_ip=ip, dst_port=port, dst_public_key=public_key, mtu=mtu)

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
        }
        mechanism.parameters.update({k: v for k, v in values.items() if v})
        return mechanism


def is_wireguard(mechanism: Mechanism) -> bool:
    return mechanism.type == TYPE
