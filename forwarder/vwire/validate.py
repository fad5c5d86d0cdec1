"""Input checks for vWire specs: every rejection names the field and says how to fix it.

All functions are pure and raise :class:`sdk.errors.InvalidArgument`; they run before anything
is created, so a rejected spec leaves the kernel untouched. Values come back normalised
(``ipaddress`` string forms).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface, ip_network

from sdk.errors import InvalidArgument, quoted

MAX_IFNAME = 15
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_BAD_IFNAME_CHARS = frozenset("/:") | frozenset(" \t\n\r\v\f")


def connection_id(value: str, field: str = "connection_id") -> str:
    """A non-empty connection id without whitespace, at most 200 characters."""
    if not value or len(value) > 200 or any(c.isspace() for c in value):
        raise InvalidArgument(
            field, f"must be 1-200 characters without whitespace, like a UUID (got {quoted(value)})"
        )
    return value


def ifname(value: str, field: str) -> str:
    """A Linux interface name: 1-15 bytes (UTF-8: the kernel counts bytes, not characters), no
    '/', ':', whitespace or control characters (a NUL would cut the name short in netlink), not
    '.'/'..'."""
    if (
        not value
        or len(value.encode()) > MAX_IFNAME
        or value in (".", "..")
        or any(c in _BAD_IFNAME_CHARS or not c.isprintable() for c in value)
    ):
        raise InvalidArgument(
            field,
            f"must be 1-{MAX_IFNAME} bytes without '/', ':', whitespace or control characters, "
            f"e.g. 'nsm0' (got {quoted(value)})",
        )
    return value


def interface_cidr(value: str, field: str) -> IPv4Interface | IPv6Interface:
    """An interface address with prefix length, e.g. ``10.0.0.1/32`` or ``fd00::1/128``."""
    try:
        if "/" not in value or "%" in value:  # no IPv6 zone: the kernel takes bare addresses
            raise ValueError
        return ip_interface(value)
    except ValueError:
        raise InvalidArgument(
            field, f"{quoted(value)} is not an address with prefix length, e.g. 10.0.0.1/32"
        ) from None


def prefix(value: str, field: str) -> str:
    """A network prefix without host bits, e.g. ``10.1.0.0/16``."""
    try:
        if "/" not in value or "%" in value:
            raise ValueError
        loose = ip_network(value, strict=False)
    except ValueError:
        raise InvalidArgument(
            field, f"{quoted(value)} is not a CIDR prefix, e.g. 10.1.0.0/16"
        ) from None
    if loose.network_address != ip_interface(value).ip:
        raise InvalidArgument(field, f"{quoted(value)} has host bits set; use {loose}")
    return str(loose)


def ip(value: str, field: str) -> str:
    """A bare IPv4 or IPv6 address."""
    try:
        if "%" in value:
            raise ValueError
        return str(ip_address(value))
    except ValueError:
        raise InvalidArgument(field, f"{quoted(value)} is not an IP address") from None


def mac(value: str, field: str) -> str:
    """A MAC address ``aa:bb:cc:dd:ee:ff``."""
    if not _MAC_RE.match(value):
        raise InvalidArgument(field, f"{quoted(value)} is not a MAC address like 02:00:00:00:00:01")
    return value.lower()
