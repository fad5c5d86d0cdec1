"""Data-plane liveness: ICMP echo from inside the client's namespace, no subprocess.

:class:`Pinger` opens a raw ICMP (or ICMPv6) socket inside a namespace (:mod:`sdk.netns`, no
fork) and answers ``await ping(address, timeout) -> bool``: True when an echo reply with our
identifier and sequence number arrived in time. Sockets are made lazily per address family and
closed by :meth:`Pinger.close`. Without CAP_NET_RAW (an injected pod container drops every
capability) it falls back to an unprivileged ICMP datagram socket (allowed by the namespace's
``net.ipv4.ping_group_range``), where the kernel owns the identifier and strips the IP header.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
from ipaddress import ip_address

from sdk.netns import socket_in

_ECHO = {4: (8, 0), 6: (128, 129)}  # (echo request type, echo reply type) per IP version


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes = b"vwire-probe") -> bytes:
    """An ICMP(v6) echo request (the kernel fills the ICMPv6 checksum)."""
    kind = _ECHO[version][0]
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if version == 6:
        return header + payload
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + payload


def is_reply(version: int, packet: bytes, ident: int, seq: int, dgram: bool = False) -> bool:
    """Whether ``packet`` (IPv4 on a raw socket: with its IP header) is our echo reply; on a
    datagram ICMP socket (``dgram``) the kernel has matched the identifier already."""
    if version == 4 and not dgram:
        packet = packet[(packet[0] & 0x0F) * 4 :] if packet else packet
    if len(packet) < 8:
        return False
    kind, _, _, got_ident, got_seq = struct.unpack("!BBHHH", packet[:8])
    return bool(kind == _ECHO[version][1] and (dgram or got_ident == ident) and got_seq == seq)


class Pinger:
    """See the module docstring."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._sockets: dict[int, socket.socket] = {}
        self._dgram: set[int] = set()  # versions served by an unprivileged datagram socket
        self._ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)

    async def _socket(self, version: int) -> socket.socket:
        sock = self._sockets.get(version)
        if sock is None:
            family, proto = (
                (socket.AF_INET, socket.IPPROTO_ICMP)
                if version == 4
                else (socket.AF_INET6, socket.IPPROTO_ICMPV6)
            )
            try:
                sock = await socket_in(
                    self.netns, lambda: socket.socket(family, socket.SOCK_RAW, proto)
                )
            except PermissionError:
                sock = await socket_in(
                    self.netns, lambda: socket.socket(family, socket.SOCK_DGRAM, proto)
                )
                self._dgram.add(version)
            sock.setblocking(False)
            self._sockets[version] = sock
        return sock

    async def ping(self, address: str, wait: float = 0.5) -> bool:
        """Send one echo request to ``address`` and wait up to ``wait`` seconds for its reply."""
        version = ip_address(address).version
        sock = await self._socket(version)
        seq = next(self._seq) & 0xFFFF
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendto(sock, echo_request(version, self._ident, seq), (address, 0))
        except OSError:
            return False  # no route, interface gone: the data plane is down
        try:
            async with asyncio.timeout(wait):
                while True:
                    packet = await loop.sock_recv(sock, 2048)
                    if is_reply(version, packet, self._ident, seq, version in self._dgram):
                        return True
        except TimeoutError:
            return False

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
