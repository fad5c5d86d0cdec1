"""Which interface and address this node's tunnels use (the underlay)."""

from __future__ import annotations

from ipaddress import ip_interface

from forwarder.kernel import KernelPort
from sdk.errors import FailedPrecondition, NotFound

DEFAULT_DESTINATIONS = ("0.0.0.0/0", "::/0", "default")


async def detect_underlay(
    kernel: KernelPort, interface: str = "", address: str = ""
) -> tuple[str, str]:
    """(interface, address) for tunnels: the given ones, or the default route's interface and its
    first address. Raises FailedPrecondition with the setting to use when it cannot tell."""
    if not interface:
        defaults = [r for r in await kernel.list_routes(None) if r.dst in DEFAULT_DESTINATIONS]
        if not defaults:
            raise FailedPrecondition(
                "no default route to find the underlay interface: set "
                "VWIRE_FORWARDER_UNDERLAY_INTERFACE (--underlay-interface)"
            )
        interface = defaults[0].dev
    try:
        addresses = await kernel.list_addresses(None, interface)
    except NotFound:
        raise FailedPrecondition(
            f"underlay interface {interface!r} does not exist in the forwarder's namespace"
        ) from None
    if address:
        return interface, address
    if not addresses:
        raise FailedPrecondition(
            f"underlay interface {interface!r} has no address: give one with "
            "VWIRE_FORWARDER_UNDERLAY_IP (--underlay-ip)"
        )
    ordered = sorted(addresses, key=lambda a: ip_interface(a).version)
    return interface, str(ip_interface(ordered[0]).ip)
