"""Namespace files and fork-free netlink sockets inside them (no pyroute2 here).

* :func:`open_netns` (from :mod:`sdk.netns`) opens a namespace file and checks that it really is
  a network namespace; it never creates anything (a typo gives ``NotFound``).
* :func:`netlink_socket_in` creates an ``AF_NETLINK`` socket that belongs to a namespace with
  :func:`sdk.netns.socket_in` (``setns()`` in a short-lived thread, no fork: safe with grpcio).
* :func:`find_namespaces` lists the namespace files visible to the forwarder, once each.
"""

from __future__ import annotations

import glob
import os
import socket
from collections.abc import Callable

from sdk.errors import NotFound
from sdk.netns import open_netns, socket_in

from .nsref import NAMED_NETNS_DIR, InodeRef, PathRef


def _new_netlink_socket() -> socket.socket:
    return socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )


async def netlink_socket_in(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace at ``path`` (``None``: the current namespace)."""
    return await socket_in(path, _new_netlink_socket)


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def find_namespaces(include: Callable[[str], bool] = lambda _p: True) -> dict[tuple[int, int], str]:
    """Namespace identity (dev, inode) -> one path for it; named namespaces are preferred."""
    found: dict[tuple[int, int], str] = {}
    candidates = sorted(glob.glob(f"{NAMED_NETNS_DIR}/*")) + sorted(
        glob.glob("/proc/[0-9]*/ns/net"), key=lambda p: int(p.split("/")[2])
    )
    for path in candidates:
        ident = _ns_id(path)
        if ident is not None and ident not in found and include(path):
            found[ident] = path
    return found


def own_netns_id() -> tuple[int, int] | None:
    """Identity of the forwarder's own network namespace."""
    return _ns_id("/proc/self/ns/net")


def resolve_ref(ref: PathRef | InodeRef, field: str = "netns") -> str:
    """Check that a parsed reference names an existing network namespace and return its path."""
    if isinstance(ref, PathRef):
        os.close(open_netns(ref.path, field))
        return ref.path
    own = own_netns_id()
    if own == (ref.dev, ref.ino):
        return f"/proc/{os.getpid()}/ns/net"
    path = find_namespaces().get((ref.dev, ref.ino))
    if path is None:
        raise NotFound(f"{field}: no network namespace has inode {ref.dev}/{ref.ino}")
    return path
