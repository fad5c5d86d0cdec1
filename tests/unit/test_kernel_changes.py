"""forwarder.kernel.changes builds the messages pyroute2's request layer would send.

Each change is compared with what pyroute2's IPBatch (the same request layer as AsyncIPRoute,
without a socket) builds from the arguments forwarder.kernel.netlink used to pass: header type
and flags, every field and every attribute.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from pyroute2 import IPBatch
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from forwarder.kernel import changes
from forwarder.kernel.changes import Change, encode

_IGNORED = {"header", "attrs", "__pad", "__align"}


def _decoded(cls: Any, data: bytes) -> tuple[int, int, dict[str, Any], list[tuple[str, Any]]]:
    msg = cls(data)
    msg.decode()
    fields = {key: value for key, value in msg.items() if key not in _IGNORED}
    return (msg["header"]["type"], msg["header"]["flags"], fields,
            sorted((name, value) for name, value, *_ in msg["attrs"]))


def _same(cls: Any, ours: Change, build: str, *args: Any, **kwargs: Any) -> None:
    batch = IPBatch()
    getattr(batch, build)(*args, **kwargs)
    theirs = bytes(batch.batch)
    assert _decoded(cls, encode(ours, 7)) == _decoded(cls, theirs)
    assert len(encode(ours, 7)) == len(theirs)  # nothing more (attribute order may differ)


@pytest.mark.parametrize("command", ["add", "del"])
@pytest.mark.parametrize(("address", "prefixlen"), [("10.64.0.2", 32), ("fd00:64::2", 128),
                                                    ("192.168.1.1", 24)])
def test_addresses(command: str, address: str, prefixlen: int) -> None:
    nodad = command == "add" and ":" in address  # as the kernel port asks for IPv6
    extra = {"flags": 2} if nodad else {}
    ours = changes.address(command, index=7, address=address, prefixlen=prefixlen, nodad=nodad)
    _same(ifaddrmsg, ours, "addr", command, index=7, address=address, prefixlen=prefixlen,
          **extra)


@pytest.mark.parametrize("command", ["add", "del"])
@pytest.mark.parametrize(("dst", "gateway", "scope", "flags", "table"), [
    ("10.64.0.0/16", None, 253, 0, 1000),
    ("10.64.0.2/32", None, 253, 0, 254),
    ("fd00:64::/64", "fe80::1", 0, 4, 1000),
    ("192.168.9.0/24", "169.254.0.1", 0, 4, 254),
    ("0.0.0.0/0", None, 253, 0, 1000),
    ("::/0", None, 253, 0, 254),
])
def test_routes(command: str, dst: str, gateway: str | None, scope: int, flags: int,
                table: int) -> None:
    address, length = dst.split("/")
    spec: dict[str, Any] = {"dst": dst, "oif": 5, "table": table}
    if gateway is None:
        spec["scope"] = scope
    else:
        spec["gateway"] = gateway
    if flags:
        spec["flags"] = flags
    ours = changes.route(command, dst=address, dst_len=int(length), index=5, table=table,
                         gateway=gateway, scope=scope, flags=flags)
    _same(rtmsg, ours, "route", command, **spec)


@pytest.mark.parametrize("command", ["add", "del"])
@pytest.mark.parametrize("spec", [
    {"family": socket.AF_INET, "src": "10.64.0.2", "src_len": 32, "iifname": "vs1"},
    {"family": socket.AF_INET6, "src": "fd00::2", "src_len": 128, "dst": "fd00::",
     "dst_len": 64, "iifname": "vwsabc"},
    {"family": socket.AF_INET, "dst": "10.0.0.0", "dst_len": 8},
])
def test_rules(command: str, spec: dict[str, Any]) -> None:
    ours = changes.rule(command, priority=100, table=1003, **spec)
    _same(fibmsg, ours, "rule", command, priority=100, table=1003, **spec)


def test_neighbours() -> None:
    _same(ndmsg, changes.neighbour("replace", dst="10.64.0.2", index=9,
                                   lladdr="02:aa:bb:cc:dd:ee"),
          "neigh", "replace", dst="10.64.0.2", ifindex=9, lladdr="02:aa:bb:cc:dd:ee",
          state=0x80)
    _same(ndmsg, changes.neighbour("del", dst="fe80::1", index=9, lladdr="02:aa:bb:cc:dd:ee"),
          "neigh", "del", dst="fe80::1", ifindex=9)


@pytest.mark.parametrize(("ours", "theirs"), [
    ({"up": True, "mtu": 1400, "alias": "vwire:x", "mac": "02:00:00:00:00:01"},
     {"state": "up", "mtu": 1400, "ifalias": "vwire:x", "address": "02:00:00:00:00:01"}),
    ({"up": False}, {"state": "down"}),
    ({"new_name": "wg0"}, {"ifname": "wg0"}),
    ({"mtu": 9000}, {"mtu": 9000}),
])
def test_link_settings(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    _same(ifinfmsg, changes.set_link(12, **ours), "link", "set", index=12, **theirs)


@pytest.mark.parametrize("peer_fd", [None, 9])
def test_veth_pairs(peer_fd: int | None) -> None:
    peer: dict[str, Any] = {"ifname": "nsm0"}
    if peer_fd is not None:
        peer["net_ns_fd"] = peer_fd
    _same(ifinfmsg, changes.new_veth("vsabc", "nsm0", peer_fd), "link", "add", ifname="vsabc",
          kind="veth", peer=peer)


def test_moving_and_deleting_links() -> None:
    _same(ifinfmsg, changes.move_link(12, 9), "link", "set", index=12, net_ns_fd=9)
    _same(ifinfmsg, changes.delete_link(12), "link", "del", index=12)


def _ack(seq: int, code: int) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 16, 24, 5, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), 2, 0, seq, 0) + body


def test_answers_are_matched_by_sequence_number() -> None:
    assert changes._answer(_ack(3, 0), 3) == 0
    assert changes._answer(_ack(3, 17), 3) == 17
    assert changes._answer(_ack(2, 17), 3) is None  # an earlier request's
    assert changes._answer(_ack(2, 0) + _ack(3, 19), 3) == 19
    assert changes._answer(b"\x00" * 8, 3) is None  # short: nothing to read


class _Kernel:
    """A socket that answers each sent request with ``codes`` in turn (stale answers first)."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, _size: int) -> bytes:
        return self.replies.pop(0)

    def close(self) -> None:
        pass


def test_a_refusal_raises_the_kernels_errno_after_skipping_stale_answers() -> None:
    changer = changes.Changer()
    changer.sock.close()
    changer.sock = _Kernel([_ack(99, 0), _ack(1, 17)])  # type: ignore[assignment]
    with pytest.raises(NetlinkError) as raised:
        changer.send(changes.neighbour("del", dst="10.0.0.1", index=3))
    assert raised.value.code == 17
    changer.sock = _Kernel([_ack(2, 0)])  # type: ignore[assignment]
    changer.send(changes.neighbour("del", dst="10.0.0.1", index=3))  # accepted: returns
    assert struct.unpack_from("=I", changer.sock.sent[0], 8)[0] == 2  # type: ignore[attr-defined]
