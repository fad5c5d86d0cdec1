"""Names and ownership markers of everything the data plane creates.

Every interface a vWire creates carries the ifalias ``vwire:<connection-id> by=<pid>``, the pid
of the forwarder process that made it (several forwarders of one name may run on one host, e.g.
lab fabrics side by side: the sweep spares what a live one made, see ``forwarder/namelock.py``);
a WireGuard interface adds `` wg=<name>``, the name it was created with (its control socket's
name, needed to delete it after it was renamed in the workload namespace). :func:`parse_marker`
reads it back, which is how :mod:`forwarder.vwire.sweep` finds what a crashed run left.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

MARKER_PREFIX = "vwire:"
_WG_TAG = " wg="
_BY_TAG = " by="
GENERATED_PREFIX = "vw"


def marker(connection_id: str, wg_name: str | None = None, owner: int | None = None) -> str:
    """The ifalias of an interface owned by ``connection_id``, made by process ``owner``
    (default: this one). The process comes before the WireGuard name, so a forwarder that
    predates it reads the name it needs."""
    wg = f"{_WG_TAG}{wg_name}" if wg_name else ""
    return f"{MARKER_PREFIX}{connection_id}{_BY_TAG}{os.getpid() if owner is None else owner}{wg}"


@dataclass(frozen=True)
class Marker:
    """A parsed ownership marker."""

    connection_id: str
    wg_name: str | None
    owner: int | None = None  #: the pid of the process that made it (None: an older marker)


def parse_marker(alias: str | None) -> Marker | None:
    """The marker in ``alias``, or None if the interface is not ours."""
    if not alias or not alias.startswith(MARKER_PREFIX):
        return None
    body = alias[len(MARKER_PREFIX) :]
    connection_id, _, wg_name = body.partition(_WG_TAG)
    owner = None
    head, tag, pid = connection_id.rpartition(_BY_TAG)
    if tag and pid.isdigit():
        connection_id, owner = head, int(pid)
    if not connection_id:
        return None
    return Marker(connection_id, wg_name or None, owner)


def generated_mac(connection_id: str, role: str) -> str:
    """A deterministic, locally administered unicast MAC for one role of one connection."""
    digest = hashlib.sha256(f"{connection_id}\0{role}\0mac".encode()).digest()
    first = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in (first, *digest[1:6]))


def generated_ifname(connection_id: str, role: str, prefix: str = GENERATED_PREFIX) -> str:
    """A deterministic, valid (13-character) interface name for one role of one connection
    (``prefix``: two letters saying what it is)."""
    digest = hashlib.sha256(f"{connection_id}\0{role}".encode()).hexdigest()
    return f"{prefix}{digest[:11]}"
