"""Names and ownership markers of everything the data plane creates.

Every interface a vWire creates carries the ifalias ``vwire:<connection-id>``; a WireGuard
interface adds `` wg=<name>``, the name it was created with (its control socket's name, needed to
delete it after it was renamed in the workload namespace). :func:`parse_marker` reads it back,
which is how :mod:`forwarder.vwire.sweep` finds what a crashed run left.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MARKER_PREFIX = "vwire:"
_WG_TAG = " wg="
GENERATED_PREFIX = "vw"


def marker(connection_id: str, wg_name: str | None = None) -> str:
    """The ifalias of an interface owned by ``connection_id``."""
    return f"{MARKER_PREFIX}{connection_id}" + (f"{_WG_TAG}{wg_name}" if wg_name else "")


@dataclass(frozen=True)
class Marker:
    """A parsed ownership marker."""

    connection_id: str
    wg_name: str | None


def parse_marker(alias: str | None) -> Marker | None:
    """The marker in ``alias``, or None if the interface is not ours."""
    if not alias or not alias.startswith(MARKER_PREFIX):
        return None
    body = alias[len(MARKER_PREFIX) :]
    connection_id, _, wg_name = body.partition(_WG_TAG)
    if not connection_id:
        return None
    return Marker(connection_id, wg_name or None)


def generated_ifname(connection_id: str, role: str) -> str:
    """A deterministic, valid (13-character) interface name for one role of one connection."""
    digest = hashlib.sha256(f"{connection_id}\0{role}".encode()).hexdigest()
    return f"{GENERATED_PREFIX}{digest[:11]}"
