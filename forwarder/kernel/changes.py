"""Single rtnetlink change requests, built with pyroute2's message classes and sent on a plain
netlink socket of the namespace's worker thread.

Why: pyroute2's ``AsyncIPRoute.route/rule/neigh/link`` pass every call through its request layer
(argument processors, a sequence-number pool scanned at every request, an asyncio reply queue).
For the one message a change is, that layer cost more than building, encoding and sending the
message: about a sixth of a forwarder's CPU in a sequential remote setup (py-spy). Here the
message is made with the same pyroute2 classes (so the library still encodes it) and sent
synchronously; the kernel handles an rtnetlink request inside ``send`` and answers at once.

Contract:

- :func:`address`, :func:`route`, :func:`rule`, :func:`neighbour`, :func:`set_link`,
  :func:`new_veth`, :func:`move_link` and :func:`delete_link` build the message
  ``AsyncIPRoute`` would send for the same change (same header type and flags, same
  fields and attributes; tests compare them with pyroute2's ``IPBatch``).
- :class:`Changer` sends one such message at a time on its own socket (made in the calling
  thread, so in its namespace) and waits for the kernel's acknowledgement: it returns when the
  kernel accepted the change and raises pyroute2's ``NetlinkError`` with the kernel's errno
  when not, as ``AsyncIPRoute`` does, so callers translate errors the same way.
"""

from __future__ import annotations

import itertools
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLM_F_REPLACE, _NLM_F_EXCL, _NLM_F_CREATE = 0x100, 0x200, 0x400
_ADD = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_EXCL | _NLM_F_CREATE
_REPLACE = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_REPLACE | _NLM_F_CREATE
_CHANGE = _NLM_F_REQUEST | _NLM_F_ACK
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_DELLINK = 16, 17
_RTM_NEWADDR, _RTM_DELADDR = 20, 21
_RTM_NEWROUTE, _RTM_DELROUTE = 24, 25
_RTM_NEWNEIGH, _RTM_DELNEIGH = 28, 29
_RTM_NEWRULE, _RTM_DELRULE = 32, 33
_RTPROT_STATIC = 4
_RTN_UNICAST = 1
_FR_ACT_TO_TBL = 1
_RT_TABLE_COMPAT = 252
_RT_TABLE_MAIN = 254
_NUD_PERMANENT = 0x80
_IFF_UP = 0x1
_IFA_F_NODAD = 0x2
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_ERRNO = struct.Struct("=i")
_TIMEOUT = 10.0  # seconds; the kernel answers within the send, this only bounds a broken one


@dataclass(frozen=True)
class Change:
    """A message ready to send: the pyroute2 message (fields and attributes set), its type and
    its header flags."""

    msg: Any
    kind: int
    flags: int


def _given(**attrs: Any) -> list[tuple[str, Any]]:
    """The attributes whose value is given (not None), in the order named."""
    return [(name, value) for name, value in attrs.items() if value is not None]


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def address(command: str, *, index: int, address: str, prefixlen: int,
            nodad: bool = False) -> Change:
    """Add (``add``; ``nodad``: without duplicate address detection) or delete (``del``)
    ``address/prefixlen`` on link ``index``."""
    msg = ifaddrmsg()
    adding = command == "add"
    msg["family"] = _family(address)
    msg["prefixlen"] = prefixlen
    msg["index"] = index
    ipv4 = msg["family"] == socket.AF_INET
    msg["attrs"] = _given(IFA_ADDRESS=address, IFA_LOCAL=address if ipv4 else None,
                          IFA_FLAGS=_IFA_F_NODAD if nodad else None)
    return Change(msg, _RTM_NEWADDR if adding else _RTM_DELADDR, _ADD if adding else _CHANGE)


def route(command: str, *, dst: str, dst_len: int, index: int, table: int,
          gateway: str | None = None, scope: int = 0, flags: int = 0) -> Change:
    """Add (``add``) or delete (``del``) the route to ``dst/dst_len`` out of link ``index``."""
    msg = rtmsg()
    adding = command == "add"
    msg["family"] = _family(dst)
    msg["dst_len"] = dst_len
    msg["table"] = table if table < 256 else _RT_TABLE_MAIN
    msg["proto"] = _RTPROT_STATIC if adding else 0
    msg["scope"] = scope
    msg["type"] = _RTN_UNICAST if adding else 0
    msg["flags"] = flags
    msg["attrs"] = _given(RTA_DST=dst if dst_len else None,  # none for a default route
                          RTA_OIF=index, RTA_TABLE=table, RTA_GATEWAY=gateway)
    return Change(msg, _RTM_NEWROUTE if adding else _RTM_DELROUTE, _ADD if adding else _CHANGE)


def rule(command: str, *, family: int, priority: int, table: int, src: str | None = None,
         src_len: int = 0, dst: str | None = None, dst_len: int = 0,
         iifname: str | None = None) -> Change:
    """Add (``add``) or delete (``del``) the policy rule looking up ``table``."""
    msg = fibmsg()
    adding = command == "add"
    msg["family"] = family
    msg["src_len"] = src_len if src is not None else 0
    msg["dst_len"] = dst_len if dst is not None else 0
    msg["table"] = table if table < 256 else _RT_TABLE_COMPAT
    msg["action"] = _FR_ACT_TO_TBL
    msg["attrs"] = [("FRA_PRIORITY", priority), ("FRA_TABLE", table),
                    *_given(FRA_SRC=src, FRA_DST=dst, FRA_IIFNAME=iifname)]
    return Change(msg, _RTM_NEWRULE if adding else _RTM_DELRULE, _ADD if adding else _CHANGE)


def neighbour(command: str, *, dst: str, index: int, lladdr: str | None = None) -> Change:
    """Set (``replace``, a permanent entry to ``lladdr``) or delete (``del``) the neighbour
    entry of ``dst`` on link ``index``."""
    msg = ndmsg()
    replacing = command == "replace"
    msg["family"] = _family(dst)
    msg["ifindex"] = index
    msg["state"] = _NUD_PERMANENT
    msg["attrs"] = [("NDA_DST", dst), *_given(NDA_LLADDR=lladdr if replacing else None)]
    return Change(msg, _RTM_NEWNEIGH if replacing else _RTM_DELNEIGH,
                  _REPLACE if replacing else _CHANGE)


def set_link(index: int, *, up: bool | None = None, mtu: int | None = None,
             alias: str | None = None, new_name: str | None = None,
             mac: str | None = None) -> Change:
    """Change the given settings of link ``index`` (the others stay)."""
    msg = ifinfmsg()
    msg["index"] = index
    if up is not None:
        msg["flags"] = _IFF_UP if up else 0
        msg["change"] = _IFF_UP
    msg["attrs"] = _given(IFLA_ADDRESS=mac, IFLA_MTU=mtu, IFLA_IFALIAS=alias,
                          IFLA_IFNAME=new_name)
    return Change(msg, _RTM_NEWLINK, _CHANGE)


def new_veth(name: str, peer_name: str, peer_netns_fd: int | None = None) -> Change:
    """Create the veth pair ``name`` (here) and ``peer_name`` (in the namespace open at
    ``peer_netns_fd``; None: here too)."""
    msg = ifinfmsg()
    peer = {"attrs": _given(IFLA_IFNAME=peer_name, IFLA_NET_NS_FD=peer_netns_fd)}
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "veth"),
        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]}),
    ]})]
    return Change(msg, _RTM_NEWLINK, _ADD)


def move_link(index: int, netns_fd: int) -> Change:
    """Move link ``index`` into the namespace open at ``netns_fd``."""
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [("IFLA_NET_NS_FD", netns_fd)]
    return Change(msg, _RTM_NEWLINK, _CHANGE)


def delete_link(index: int) -> Change:
    """Delete link ``index`` (a veth: both ends)."""
    msg = ifinfmsg()
    msg["index"] = index
    return Change(msg, _RTM_DELLINK, _CHANGE)


def encode(change: Change, seq: int) -> bytes:
    """The bytes of ``change`` with sequence number ``seq``."""
    msg = change.msg
    msg["header"]["type"] = change.kind
    msg["header"]["flags"] = change.flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data[: msg["header"]["length"]])


class Changer:
    """Sends changes on a netlink socket of the calling thread's namespace (module docstring).
    Not thread-safe: one worker thread owns it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.settimeout(_TIMEOUT)
        self.sock.bind((0, 0))
        self._seq = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def send(self, change: Change) -> None:
        """Send ``change`` and wait for the kernel's answer (``NetlinkError`` on refusal)."""
        seq = next(self._seq) & 0xFFFFFFFF
        self.sock.send(encode(change, seq))
        while True:
            reply = self.sock.recv(65536)
            code = _answer(reply, seq)
            if code is None:
                continue  # an answer to an earlier, abandoned request
            if code:
                raise NetlinkError(code)
            return


def _answer(reply: bytes, seq: int) -> int | None:
    """The errno the kernel answered request ``seq`` with in ``reply`` (0: done), or None when
    ``reply`` holds no answer to it."""
    offset = 0
    while offset + _HEADER.size <= len(reply):
        length, kind, _, number, _ = _HEADER.unpack_from(reply, offset)
        if length < _HEADER.size:
            break
        if number == seq and kind == _NLMSG_ERROR:
            return -int(_ERRNO.unpack_from(reply, offset + _HEADER.size)[0])
        offset += (length + 3) & ~3
    return None
