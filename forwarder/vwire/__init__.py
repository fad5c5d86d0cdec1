"""vWire programming: one side of a connection on this node, and its undo.

* :func:`program_local` — KERNEL on both sides, same node: one veth pair (:mod:`.local`);
* :func:`program_remote` — WIREGUARD between nodes, namespace trick (:mod:`.remote`), taking
  over what :func:`prepare_remote` made while the request was downstream (:mod:`.ahead`);
* :class:`VWire` — the handle: ``mtu``, ``ends``, ``listen_port``, ``close()``, ``metrics()``;
* :func:`find_leftovers`, :func:`sweep`, :func:`adopt` — crash recovery (:mod:`.sweep`).

Helpers with one job each: :mod:`.spec` (input values), :mod:`.validate` (checks),
:mod:`.attach` (addresses/routes of one end), :mod:`.mtu`, :mod:`.naming` (names, markers),
:mod:`.undo` (rollback log), :mod:`.resolve` (namespace references), :mod:`.handle`.
"""

from .ahead import Ahead
from .handle import End, VWire
from .local import program_local
from .mtu import DEFAULT_MTU, WIREGUARD_OVERHEAD_IPV4, WIREGUARD_OVERHEAD_IPV6
from .naming import marker, parse_marker
from .remote import PreparedRemote, RemotePreparation, prepare_remote, program_remote
from .spec import (
    Attachment,
    LocalVWireSpec,
    NeighbourSpec,
    RemoteVWireSpec,
    RouteSpec,
    WireGuardPeerSpec,
)
from .sweep import Leftover, adopt, find_leftovers, sweep

__all__ = [
    "DEFAULT_MTU",
    "WIREGUARD_OVERHEAD_IPV4",
    "WIREGUARD_OVERHEAD_IPV6",
    "Ahead",
    "Attachment",
    "End",
    "Leftover",
    "LocalVWireSpec",
    "NeighbourSpec",
    "PreparedRemote",
    "RemotePreparation",
    "RemoteVWireSpec",
    "RouteSpec",
    "VWire",
    "WireGuardPeerSpec",
    "adopt",
    "find_leftovers",
    "marker",
    "parse_marker",
    "prepare_remote",
    "program_local",
    "program_remote",
    "sweep",
]
