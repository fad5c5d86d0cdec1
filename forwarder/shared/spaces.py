"""Which address space (device pair between two nodes) a shared-device connection goes over.

Connections over one shared device are told apart, on the way in from the tunnel, only by the
packet's addresses: a packet from the other node with source ``s`` and destination ``d``
belongs to the connection whose far prefixes hold ``s`` and whose near prefixes hold ``d``.
Two connections for which some packet would match both *clash*: they cannot share a device,
and the second goes over another device pair (the next space). Connections that share a far
address but not a near one (many clients of one endpoint) or the reverse share a device.

Contract:

* :class:`Selectors` are one connection's near prefixes (this side's addresses, and what the
  other side routes to it) and far prefixes (the other side's addresses, and what this side
  routes to it); both sides of a connection compute the mirror image of each other's.
* :func:`clash` is symmetric and true exactly when a (far, near) address pair exists that both
  connections would claim (prefixes of different families never overlap).
* :func:`choose_space` returns the lowest space in which ``new`` clashes with none of the
  connections already there; the same connections give the same answer on both nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

AnyNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True)
class Selectors:
    """One connection's prefixes on this side (``near``) and on the far side (``far``)."""

    near: tuple[AnyNetwork, ...]
    far: tuple[AnyNetwork, ...]


def _overlap(a: Iterable[AnyNetwork], b: Iterable[AnyNetwork]) -> bool:
    others = list(b)
    return any(x.version == y.version and x.overlaps(y) for x in a for y in others)  # type: ignore[arg-type]


def clash(a: Selectors, b: Selectors) -> bool:
    """Whether a packet from the tunnel could belong to both ``a`` and ``b``."""
    return _overlap(a.far, b.far) and _overlap(a.near, b.near)


def choose_space(spaces: Mapping[int, Iterable[Selectors]], new: Selectors) -> int:
    """The lowest space whose connections none clash with ``new`` (module docstring)."""
    space = 0
    while any(clash(new, other) for other in spaces.get(space, ())):
        space += 1
    return space
