"""The WireGuard backend interface: peer and stats values, events, and the backend Protocol.

Contract:
- :class:`WgPeer` and :class:`WgPeerStats` are plain frozen values; :func:`validate_peer` checks a
  peer completely *before* anything is sent to the data plane (a UAPI set is not transactional,
  so a half-valid peer must never reach it) and returns it with its key in canonical base64.
- :class:`WireGuardBackend` is what the vWire programmer codes against; both the kernel backend
  and the wireguard-go backend implement it. Names must be unique across namespaces (wireguard-go
  keeps its control sockets in one global directory).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from forwarder.kernel.port import LinkStats
from sdk.errors import InvalidArgument

from .keys import PrivateKey, parse_private_key, parse_public_key
from .netns import check_netns

_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class WgPeer:
    """Desired state of one peer; ``set_peer`` makes the device match it exactly."""

    public_key: str  # base64
    endpoint: tuple[str, int] | None  # (ip, port); ip may be IPv6; None = learn it from the peer
    allowed_ips: tuple[str, ...]  # CIDRs
    keepalive: int | None = None  # persistent keepalive seconds; None = off


@dataclass(frozen=True)
class WgPeerStats:
    """Counters of one peer as the data plane reports them."""

    public_key: str
    rx_bytes: int
    tx_bytes: int
    last_handshake: float | None  # unix seconds; None = never


@dataclass(frozen=True)
class WgProcessEvent:
    """Something happened to a userspace WireGuard process outside the caller's control.

    ``kind``: ``exited`` (died unexpectedly), ``restarted`` (a new process runs with key, port
    and peers re-applied, moved back to where the interface was; addresses, routes and link state
    are NOT restored: the subscriber must re-apply them), ``restart_failed`` (given up; the
    interface is gone until deleted and re-created).
    """

    ifname: str
    kind: Literal["exited", "restarted", "restart_failed"]
    returncode: int | None = None
    detail: str = ""


class WireGuardBackend(Protocol):
    """Creates and programs WireGuard interfaces; one implementation per data plane."""

    kind: str  # "kernel" or "wireguard-go"
    #: whether ``create`` given ``netns`` (and ``mtu``) makes the interface there itself, so
    #: a caller that knows the namespace should always say it (see ``create``)
    tun_in_netns: bool

    async def create(
        self,
        ifname: str,
        underlay_netns: str | None,
        private_key: str,
        listen_port: int,
        mtu: int | None = None,
        netns: str | None = None,
        alias: str | None = None,
    ) -> int:
        """Create ``ifname`` with its UDP socket in ``underlay_netns``; return the listen port.

        ``underlay_netns`` is a netns file path (``/var/run/netns/NAME``, ``/proc/PID/ns/net``)
        or None for the current namespace; ``listen_port`` 0 lets the data plane pick. The link
        is left DOWN with no addresses. ``mtu`` is a hint: the MTU the caller will set next (a
        backend may have a device with that MTU ready; it sets nothing itself). ``netns`` is a
        hint too: the namespace the caller moves the interface into next; a backend may create
        it there already, or hand out one kept there (at ``mtu``, marked ``alias``; ``move``
        to it then does nothing), which the caller sees by looking for the interface in
        ``netns``. Otherwise ``alias`` is the caller's to set.
        """
        ...

    async def move(self, ifname: str, underlay_netns: str | None, target_netns: str) -> None:
        """Move the interface into ``target_netns``; its UDP socket stays in the underlay."""
        ...

    async def set_peer(self, ifname: str, peer: WgPeer) -> None:
        """Add the peer or make an existing one match ``peer`` exactly (allowed IPs replaced)."""
        ...

    async def add_allowed_ips(
        self, ifname: str, public_key: str, prefixes: tuple[str, ...]
    ) -> None:
        """Add ``prefixes`` to the allowed IPs of the existing peer ``public_key``; the others
        stay (and a peer that does not exist is not made)."""
        ...

    async def remove_peer(self, ifname: str, public_key: str) -> None:
        """Remove the peer; removing an absent peer is not an error."""
        ...

    async def stats(self, ifname: str) -> list[WgPeerStats]:
        """Per-peer counters."""
        ...

    async def delete(self, ifname: str) -> None:
        """Remove the interface and everything behind it; idempotent."""
        ...

    async def reap(self, ifnames: Collection[str]) -> None:
        """The links of ``ifnames``, which this backend does not run (a previous run made them),
        were just deleted: remove what is left behind them once they have ended (a daemon ends
        with its TUN, a moment after, and leaves its control socket), waiting a bounded time for
        all of them together. Nothing for an interface this backend runs; idempotent."""
        ...

    async def retire(self, ifname: str, netns: str, current: str) -> None:
        """The vWire of ``ifname``, whose interface is in ``netns`` and named ``current`` now,
        is closed: either remove it as :meth:`delete` does, or keep what is behind it (wiped:
        no key, no port, no peer; the interface down, without addresses, under another name)
        for a later ``create`` into ``netns``. Either way ``ifname`` is no longer this one's."""
        ...

    def baseline(self, ifname: str) -> LinkStats | None:
        """The interface's counters when ``create`` handed it out (None: a new interface, at
        0): a kept one's go on from its last vWire's."""
        ...


def validate_ifname(ifname: object, field: str = "ifname") -> str:
    """An interface name usable as a Linux link name and as a socket file name."""
    if not isinstance(ifname, str) or not _IFNAME_RE.match(ifname):
        raise InvalidArgument(
            field,
            "must be 1-15 characters of letters, digits, '_', '.', '-' starting with a letter "
            f"or digit (got {ifname!r})",
        )
    return ifname


def validate_port(port: object, field: str, *, allow_zero: bool) -> int:
    """A UDP port number (0 allowed only where the data plane may pick one)."""
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise InvalidArgument(field, f"must be an integer in {low}..65535 (got {port!r})")
    return port


def validate_peer(peer: WgPeer) -> WgPeer:
    """Check every field of ``peer``; return it with the public key in canonical base64."""
    public_key = parse_public_key(peer.public_key, "peer.public_key")
    if peer.endpoint is not None:
        if not isinstance(peer.endpoint, tuple) or len(peer.endpoint) != 2:
            raise InvalidArgument("peer.endpoint", "must be an (ip, port) pair or None")
        host, port = peer.endpoint
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidArgument(
                "peer.endpoint", f"host must be an IPv4 or IPv6 address (got {host!r})"
            ) from None
        validate_port(port, "peer.endpoint", allow_zero=False)
    if isinstance(peer.allowed_ips, str) or not isinstance(peer.allowed_ips, tuple):
        raise InvalidArgument("peer.allowed_ips", "must be a tuple of CIDR strings")
    for cidr in peer.allowed_ips:
        try:
            if not isinstance(cidr, str) or "/" not in cidr:
                raise ValueError
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidArgument(
                "peer.allowed_ips", f"{cidr!r} is not a CIDR such as 10.0.0.2/32 or fd00::2/128"
            ) from None
    if peer.keepalive is not None and (
        isinstance(peer.keepalive, bool)
        or not isinstance(peer.keepalive, int)
        or not 0 <= peer.keepalive <= 65535
    ):
        raise InvalidArgument(
            "peer.keepalive", f"must be seconds in 0..65535 or None (got {peer.keepalive!r})"
        )
    return replace(peer, public_key=public_key)


def validate_create(
    ifname: str, underlay_netns: str | None, private_key: str, listen_port: int
) -> PrivateKey:
    """Check the arguments of ``WireGuardBackend.create`` (InvalidArgument/NotFound naming the
    field); returns the parsed private key."""
    validate_ifname(ifname)
    key = parse_private_key(private_key)
    validate_port(listen_port, "listen_port", allow_zero=True)
    if underlay_netns is not None:
        check_netns(underlay_netns, "underlay_netns")
    return key
