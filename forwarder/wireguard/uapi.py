"""Our own asyncio client for WireGuard's cross-platform userspace API (UAPI).

Protocol facts (from WireGuard's "Cross-platform Userspace Implementation" description): the
daemon listens on ``/var/run/wireguard/IFNAME.sock``; a request is ``set=1`` or ``get=1``
followed by ``key=value`` lines and a blank line; keys are lowercase hex; an IPv6 endpoint is
written in brackets; ``public_key=`` opens a peer section; the reply ends with ``errno=N`` and a
blank line (``get`` replies list the device and peers before that line).

Contract:
- Builders (:func:`device_lines`, :func:`peer_lines`, :func:`removal_lines`) are pure and never
  emit ``replace_peers``: peers are changed one at a time. ``peer_lines`` replaces the peer's
  allowed IPs so the device matches the :class:`WgPeer` exactly.
- Requests may contain a private key: they are never logged and never put into an exception.
- Errors: missing socket -> :class:`NotFound`; refused (stale socket of a dead daemon) or
  timeout -> :class:`Unavailable`; ``errno=N`` with N != 0 -> :class:`UapiError` (a
  :class:`DataplaneError` carrying ``errno``); unparsable reply -> :class:`DataplaneError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sdk.errors import DataplaneError, InvalidArgument, NotFound, Unavailable

from .keys import PrivateKey, b64_to_hex, hex_to_b64
from .model import WgPeer, WgPeerStats

SOCKET_DIR = Path("/var/run/wireguard")
DEFAULT_TIMEOUT = 5.0
_READ_LIMIT = 4 * 1024 * 1024


class UapiError(DataplaneError):
    """The daemon answered a request with ``errno=N`` (N != 0)."""

    def __init__(self, ifname: str, operation: str, errno: int) -> None:
        name = errno_mod.errorcode.get(errno, "?")
        super().__init__(
            f"wireguard-go {operation} on {ifname} failed: errno={errno} ({name}: "
            f"{os.strerror(errno)})"
        )
        self.ifname = ifname
        self.errno = errno


@dataclass
class PeerState:
    """One peer as ``get=1`` reports it."""

    public_key: str  # base64
    endpoint: tuple[str, int] | None = None
    allowed_ips: list[str] = field(default_factory=list)
    keepalive: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float | None = None

    def stats(self) -> WgPeerStats:
        return WgPeerStats(self.public_key, self.rx_bytes, self.tx_bytes, self.last_handshake)


@dataclass
class DeviceState:
    """A device as ``get=1`` reports it (the private key is deliberately dropped)."""

    listen_port: int = 0
    fwmark: int = 0
    peers: list[PeerState] = field(default_factory=list)


def socket_path(ifname: str, socket_dir: Path = SOCKET_DIR) -> Path:
    """Where the daemon for ``ifname`` listens."""
    return socket_dir / f"{ifname}.sock"


def format_endpoint(host: str, port: int) -> str:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820``."""
    if ipaddress.ip_address(host).version == 6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """Inverse of :func:`format_endpoint`."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"endpoint without port: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def device_lines(
    private_key: PrivateKey | None = None, listen_port: int | None = None
) -> list[str]:
    """Device-level settings."""
    lines = []
    if private_key is not None:
        lines.append(f"private_key={b64_to_hex(private_key, 'private_key')}")
    if listen_port is not None:
        lines.append(f"listen_port={listen_port}")
    return lines


def peer_lines(peer: WgPeer) -> list[str]:
    """Make one peer match ``peer`` exactly (peer must be validated already)."""
    lines = [f"public_key={b64_to_hex(peer.public_key, 'peer.public_key')}"]
    if peer.endpoint is not None:
        lines.append(f"endpoint={format_endpoint(*peer.endpoint)}")
    lines.append(f"persistent_keepalive_interval={peer.keepalive or 0}")
    lines.append("replace_allowed_ips=true")
    lines.extend(f"allowed_ip={cidr}" for cidr in peer.allowed_ips)
    return lines


def allowed_ip_lines(public_key: str, prefixes: Iterable[str]) -> list[str]:
    """Add allowed IPs to an existing peer (prefixes must be validated already)."""
    return [f"public_key={b64_to_hex(public_key, 'public_key')}", "update_only=true",
            *(f"allowed_ip={cidr}" for cidr in prefixes)]


def wipe_lines() -> list[str]:
    """Forget the private key (an all-zero key removes it), release the port and every peer."""
    return ["private_key=" + "0" * 64, "listen_port=0", "replace_peers=true"]


def removal_lines(public_key: str) -> list[str]:
    """Remove one peer."""
    return [f"public_key={b64_to_hex(public_key, 'public_key')}", "remove=true"]


def encode_set(lines: Iterable[str]) -> bytes:
    """A complete ``set=1`` request."""
    return ("set=1\n" + "".join(f"{line}\n" for line in lines) + "\n").encode("ascii")


GET_REQUEST = b"get=1\n\n"


def parse_reply(text: str) -> tuple[list[tuple[str, str]], int]:
    """Split a reply into its ``key=value`` pairs (before ``errno``) and the errno."""
    pairs: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError("malformed UAPI line (no '=')")
        if key == "errno":
            return pairs, int(value)
        pairs.append((key, value))
    raise ValueError("UAPI reply has no errno line")


#: ``get`` keys of a peer whose values are decimal numbers, and the field each fills.
_PEER_NUMBERS = {
    "persistent_keepalive_interval": "keepalive", "rx_bytes": "rx_bytes", "tx_bytes": "tx_bytes",
}


def _peer_value(peer: PeerState, key: str, value: str, handshake: list[int]) -> None:
    """Set what ``key`` says of ``peer``; ``handshake`` holds [seconds, nanoseconds]."""
    if key == "endpoint":
        peer.endpoint = parse_endpoint(value)
    elif key == "allowed_ip":
        peer.allowed_ips.append(value)
    elif key in _PEER_NUMBERS:
        setattr(peer, _PEER_NUMBERS[key], int(value))
    elif key in ("last_handshake_time_sec", "last_handshake_time_nsec"):
        handshake[key.endswith("_nsec")] = int(value)
        sec, nsec = handshake
        peer.last_handshake = sec + nsec / 1e9 if (sec or nsec) else None


def parse_device(pairs: Iterable[tuple[str, str]]) -> DeviceState:
    """Build a :class:`DeviceState` from the pairs of a ``get`` reply (unknown keys ignored)."""
    device = DeviceState()
    peer: PeerState | None = None
    handshake = [0, 0]
    for key, value in pairs:
        if key == "public_key":
            peer = PeerState(public_key=hex_to_b64(value, "public_key"))
            device.peers.append(peer)
            handshake = [0, 0]
        elif peer is not None:
            _peer_value(peer, key, value, handshake)
        elif key == "listen_port":
            device.listen_port = int(value)
        elif key == "fwmark":
            device.fwmark = int(value)
    return device


class UapiClient:
    """Talks to the daemon of one interface; one connection per request."""

    def __init__(
        self, ifname: str, socket_dir: Path = SOCKET_DIR, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.ifname = ifname
        self.path = socket_path(ifname, socket_dir)
        self.timeout = timeout

    async def set(self, lines: Iterable[str]) -> None:
        """Apply ``set=1`` with ``lines``; raise on a non-zero errno."""
        _, err = await self._exchange(encode_set(lines), "set")
        if err:
            raise UapiError(self.ifname, "set", err)

    async def get(self) -> DeviceState:
        """The device's current state."""
        pairs, err = await self._exchange(GET_REQUEST, "get")
        if err:
            raise UapiError(self.ifname, "get", err)
        try:
            return parse_device(pairs)
        except (ValueError, InvalidArgument) as exc:
            raise DataplaneError(f"wireguard-go get on {self.ifname}: bad reply: {exc}") from None

    async def _exchange(self, request: bytes, operation: str) -> tuple[list[tuple[str, str]], int]:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(
                    str(self.path), limit=_READ_LIMIT
                )
                try:
                    writer.write(request)
                    await writer.drain()
                    reply = await reader.readuntil(b"\n\n")
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):  # the daemon may hang up first
                        await writer.wait_closed()
        except FileNotFoundError:
            raise NotFound(
                f"wireguard interface {self.ifname}: no UAPI socket at {self.path}"
            ) from None
        except ConnectionRefusedError:
            raise Unavailable(
                f"wireguard interface {self.ifname}: UAPI socket {self.path} refuses connections "
                "(its wireguard-go process is gone)"
            ) from None
        except TimeoutError:
            raise Unavailable(
                f"wireguard interface {self.ifname}: UAPI {operation} timed out after "
                f"{self.timeout} s"
            ) from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            code = getattr(exc, "errno", None)
            what = errno_mod.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
            raise Unavailable(
                f"wireguard interface {self.ifname}: UAPI {operation} failed: {what}"
            ) from None
        try:
            return parse_reply(reply.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataplaneError(
                f"wireguard-go {operation} on {self.ifname}: bad reply: {exc}"
            ) from None
