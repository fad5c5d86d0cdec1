"""MTU arithmetic: computed, never guessed.

* Local vWire (veth): the connection context's MTU, or :data:`DEFAULT_MTU`.
* Remote vWire (WireGuard): the underlay MTU of the path (the underlay interface's MTU, or the
  path's when that is smaller: :func:`forwarder.reach.path_mtu`) minus the WireGuard overhead —
  60 bytes over IPv4 (20 IP + 8 UDP + 32 WireGuard), 80 bytes over IPv6 (40 IP + ...) — capped by
  the connection context's MTU. When the underlay's family is unknown the IPv6 overhead is
  assumed (the smaller, always-safe result).
"""

from __future__ import annotations

from sdk.errors import FailedPrecondition, InvalidArgument

DEFAULT_MTU = 1500
MIN_MTU_IPV4 = 68
MIN_MTU_IPV6 = 1280
MAX_MTU = 65535
WIREGUARD_OVERHEAD_IPV4 = 60
WIREGUARD_OVERHEAD_IPV6 = 80


def check_mtu(mtu: int, *, ipv6: bool, field: str = "mtu") -> int:
    """``mtu`` if it fits the addresses it must carry, else InvalidArgument naming ``field``."""
    low = MIN_MTU_IPV6 if ipv6 else MIN_MTU_IPV4
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not low <= mtu <= MAX_MTU:
        reason = " (IPv6 needs at least 1280)" if ipv6 else ""
        raise InvalidArgument(
            field, f"must be an integer in {low}..{MAX_MTU}{reason} (got {mtu!r})"
        )
    return mtu


def local_mtu(requested: int | None, *, ipv6: bool) -> int:
    """MTU of both ends of a local (veth) vWire."""
    return check_mtu(DEFAULT_MTU if requested is None else requested, ipv6=ipv6)


def wireguard_mtu(
    underlay_mtu: int, *, ipv6_underlay: bool, requested: int | None, ipv6: bool
) -> int:
    """MTU of a WireGuard vWire interface over an underlay link of ``underlay_mtu`` bytes."""
    overhead = WIREGUARD_OVERHEAD_IPV6 if ipv6_underlay else WIREGUARD_OVERHEAD_IPV4
    mtu = underlay_mtu - overhead
    if requested is not None:
        mtu = min(mtu, check_mtu(requested, ipv6=ipv6))
    low = MIN_MTU_IPV6 if ipv6 else MIN_MTU_IPV4
    if mtu < low:
        raise FailedPrecondition(
            f"mtu: the underlay MTU {underlay_mtu} leaves {mtu} bytes after WireGuard's "
            f"{overhead}-byte overhead, below the minimum {low}; raise the underlay MTU"
        )
    return mtu
