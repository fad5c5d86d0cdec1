"""Plan and apply the IP configuration of one vWire end inside its namespace.

:func:`plan_end` is pure: it validates an :class:`~forwarder.vwire.spec.Attachment` against the
other end's addresses and turns it into kernel objects, raising ``InvalidArgument`` (naming the
field) before anything exists. Route rules:

* every address of the other end that none of this end's prefixes covers gets a host route on
  the vWire interface, so the other end is reachable even with /32 and /128 addresses;
* a route with a next hop goes via that next hop (``onlink`` on point-to-point interfaces); on a
  veth the next hop must be reachable on the link — inside one of this end's prefixes or one of
  the other end's addresses, and not this end's own address — else ``InvalidArgument`` (the
  kernel would refuse it with "Network is unreachable" after the link was made);
* a route with an empty next hop goes "via the other end": through the other end's first address
  of the same family on a veth, straight onto the device on a point-to-point (WireGuard) link;
* routes equal to a connected prefix or to an already planned destination are dropped.

:func:`apply_end` marks the interface (ifalias), sets its MTU (and MAC) and brings it up in one
kernel call, then adds its addresses, neighbours and routes, in that order, in another
(:meth:`~forwarder.kernel.KernelPort.add_all`: all or none). Up first, because the kernel takes
a route only through a link that is up. It pushes no undo actions: everything it adds hangs off
the interface and disappears when the caller deletes the interface (the caller's undo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_network

from forwarder.kernel import Address, KernelPort, Neighbour, Route
from sdk.errors import InvalidArgument

from . import validate
from .spec import Attachment

AnyInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True)
class EndPlan:
    """Everything to configure on one vWire interface."""

    role: str
    netns: str
    ifname: str
    addresses: tuple[str, ...]
    routes: tuple[Route, ...]
    neighbours: tuple[Neighbour, ...]


def parse_addresses(att: Attachment, role: str) -> list[AnyInterface]:
    """The attachment's addresses, validated (field ``<role>.addresses[i]``)."""
    return [
        validate.interface_cidr(a, f"{role}.addresses[{i}]") for i, a in enumerate(att.addresses)
    ]


def plan_end(
    role: str,
    att: Attachment,
    netns: str,
    ifname: str,
    peer_addresses: Sequence[AnyInterface],
    *,
    point_to_point: bool,
) -> EndPlan:
    """Validate ``att`` and compute its addresses, routes and neighbours (module docstring)."""
    own = parse_addresses(att, role)
    connected = {str(a.network) for a in own}
    routes: dict[str, Route] = {}
    for peer in peer_addresses:
        if not any(peer.ip in a.network for a in own):
            host = str(ip_network(peer.ip))
            routes.setdefault(host, Route(dst=host, dev=ifname))
    for i, spec in enumerate(att.routes):
        field = f"{role}.routes[{i}]"
        dst = validate.prefix(spec.prefix, f"{field}.prefix")
        version = ip_network(dst).version
        if spec.next_hop:
            hop = validate.ip(spec.next_hop, f"{field}.next_hop")
            if ip_address(hop).version != version:
                raise InvalidArgument(f"{field}.next_hop", f"{hop} is not of the family of {dst}")
            if not point_to_point:
                _check_reachable(hop, own, peer_addresses, f"{field}.next_hop")
            route = Route(dst=dst, dev=ifname, gateway=hop, onlink=point_to_point)
        elif point_to_point:
            route = Route(dst=dst, dev=ifname)
        else:
            via = next((p for p in peer_addresses if p.version == version), None)
            if via is None:
                raise InvalidArgument(
                    f"{field}.next_hop",
                    f"is empty (= via the other end) but the other end has no IPv{version} "
                    "address; give a next hop or an address to the other end",
                )
            route = Route(dst=dst, dev=ifname, gateway=str(via.ip))
        if dst not in connected:
            routes.setdefault(dst, route)
    neighbours = tuple(
        Neighbour(
            dev=ifname,
            ip=validate.ip(n.ip, f"{role}.neighbours[{i}].ip"),
            lladdr=validate.mac(n.lladdr, f"{role}.neighbours[{i}].lladdr"),
        )
        for i, n in enumerate(att.neighbours)
    )
    return EndPlan(
        role=role,
        netns=netns,
        ifname=ifname,
        addresses=tuple(str(a) for a in own),
        routes=tuple(routes.values()),
        neighbours=neighbours,
    )


def _check_reachable(
    hop: str, own: Sequence[AnyInterface], peer: Sequence[AnyInterface], field: str
) -> None:
    """InvalidArgument unless next hop ``hop`` is reachable on a veth end with addresses ``own``
    whose other end has addresses ``peer`` (see the module docstring)."""
    address = ip_address(hop)
    if any(address == a.ip for a in own):
        raise InvalidArgument(field, f"{hop} is this end's own address, not a next hop")
    if any(address in a.network for a in own) or any(address == p.ip for p in peer):
        return
    raise InvalidArgument(
        field,
        f"{hop} is not reachable on the vWire: use an address inside this end's prefixes "
        "or the other end's address, or leave it empty (= via the other end)",
    )


async def apply_end(
    kernel: KernelPort, plan: EndPlan, *, mtu: int, alias: str, configured: bool = False,
    mac: str | None = None, rename_from: str | None = None,
) -> None:
    """Configure the (existing, down) interface of ``plan`` (see module docstring);
    ``configured``: it has its MTU and alias already (only brought up); ``mac``: set its
    link-layer address too; ``rename_from``: it is still named so, and takes ``plan.ifname``
    in the call that brings it up (the kernel renames before it changes the flags)."""
    current = rename_from or plan.ifname
    new_name = plan.ifname if current != plan.ifname else None
    if configured:
        await kernel.set_link(plan.netns, current, up=True, new_name=new_name)
    else:
        await kernel.set_link(plan.netns, current, mtu=mtu, alias=alias, mac=mac, up=True,
                              new_name=new_name)
    addresses = [Address(plan.ifname, cidr) for cidr in plan.addresses]
    await kernel.add_all(plan.netns, [*addresses, *plan.neighbours, *plan.routes])
