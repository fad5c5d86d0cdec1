"""Which interface and address this node's tunnels use (the underlay), and which address it
advertises to other sites (:func:`advertised_address`)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

from api.mechanisms.wireguard import NAT_ONE_TO_ONE
from forwarder.kernel import KernelPort
from sdk.errors import FailedPrecondition, InvalidArgument, NotFound

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


def advertised_address(nat: str, external_address: str, underlay_ip: str) -> str:
    """The tunnel address this node advertises to other sites: ``external_address`` behind 1:1
    NAT (required there, refused elsewhere), else the underlay address. InvalidArgument names
    the setting and the fix."""
    if nat == NAT_ONE_TO_ONE:
        if not external_address:
            raise InvalidArgument(
                "external_address", "--nat one-to-one needs the node's public address: set "
                "VWIRE_FORWARDER_EXTERNAL_ADDRESS (--external-address IP)"
            )
        try:
            return str(ip_address(external_address))
        except ValueError:
            raise InvalidArgument(
                "external_address", f"{external_address!r} is not an IP address"
            ) from None
    if external_address:
        raise InvalidArgument(
            "external_address", f"is only used with --nat one-to-one (the node is behind "
            f"{nat!r}): remove it or set VWIRE_FORWARDER_NAT=one-to-one"
        )
    return underlay_ip
