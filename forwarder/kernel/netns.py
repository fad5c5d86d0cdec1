"""Namespace files and fork-free netlink sockets inside them (no pyroute2 here).

* :func:`sdk.netns.open_netns` opens a namespace file without blocking or side effects and
  checks that it really is a network namespace; it never creates anything.
* :class:`NamespaceGuard` decides which network namespaces may be *workload* namespaces, i.e.
  named by a request (the KERNEL mechanism's ``inodeURL``): never the forwarder's own namespace
  nor the host's (pid 1's, and the kernel's initial one, where ``kthreadd`` lives) unless the
  forwarder is configured to allow them (``VWIRE_FORWARDER_ALLOW_HOST_NETNS``). Programming
  those would put a client's interface, addresses and routes next to the node's own traffic.
  The guard looks at the namespace the opened fd refers to, so a symbolic link, a bind mount
  or a ``/proc/PID`` whose process was replaced cannot dodge it; the kernel port checks again at
  every open (:func:`netlink_socket_in`), not only when the reference is resolved.
* :func:`netlink_socket_in` creates an ``AF_NETLINK`` socket that belongs to a namespace with
  :func:`sdk.netns.socket_in_fd` (``setns()`` in a short-lived thread, no fork: safe with grpcio).
* :func:`find_namespaces` lists the namespace files where workloads live (``/var/run/netns``
  and ``/proc/PID/ns/net``), once each; ``inode://DEV/INO`` resolves only among them.

What the guard cannot do: tell *which* workload asked. The forwarder's caller is its nsmgr, and
the nsmgr cannot identify the process behind a unix-socket call (gRPC Python exposes no peer
credentials), so a local client can still name another workload's namespace (see
``docs/security.md``, "Namespaces, certificates and files").
"""

from __future__ import annotations

import functools
import glob
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sdk.errors import NotFound, PermissionDenied, quoted
from sdk.netns import SHOWN, netns_identity, open_netns, socket_in_fd

from .nsref import NAMED_NETNS_DIR, InodeRef, PathRef

NsId = tuple[int, int]
"""A namespace's identity: (device, inode) of its nsfs file."""

ALLOW_SETTING = "VWIRE_FORWARDER_ALLOW_HOST_NETNS"


class NamespaceRefused(PermissionDenied):
    """A request named a namespace that is not a workload's (PERMISSION_DENIED)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def ns_id(path: str) -> NsId | None:
    """Identity (device, inode) of the namespace file at ``path`` now; None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def own_netns_id() -> NsId | None:
    """Identity of the forwarder's own network namespace."""
    return ns_id("/proc/self/ns/net")


@functools.cache
def host_netns_ids() -> Mapping[NsId, str]:
    """Identities of the host's network namespace, with what they are: pid 1's (the init of
    this pid namespace) and the kernel's initial one (kthreadd's, pid 2), whichever are
    readable here. Read once per process (the guard asks at every kernel call; neither process
    changes its namespace)."""
    found: dict[NsId, str] = {}
    ident = ns_id("/proc/1/ns/net")
    if ident is not None:
        found[ident] = "the host's network namespace (pid 1's)"
    try:
        with open("/proc/2/comm", encoding="utf-8") as comm:
            kthreadd = comm.read().strip() == "kthreadd"
    except OSError:
        kthreadd = False
    ident = ns_id("/proc/2/ns/net") if kthreadd else None
    if ident is not None:
        found.setdefault(ident, "the host's network namespace (the kernel's initial one)")
    return found


@dataclass
class NamespaceGuard:
    """Which namespaces a request may name (see the module docstring).

    ``allow_host``: accept the forwarder's own and the host's namespace as workload namespaces.
    """

    allow_host: bool = False

    def refusal(self, ident: NsId | None) -> str | None:
        """Why the namespace ``ident`` may not be a workload's, or None if it may."""
        if self.allow_host or ident is None:
            return None
        if ident == own_netns_id():
            what = "the forwarder's own network namespace"
        else:
            host = host_netns_ids().get(ident)
            if host is None:
                return None
            what = host
        return (
            f"is {what}: a vWire goes into a workload's own namespace; run the workload in one "
            "(ip netns add NAME, unshare --net) and name that, or set "
            f"{ALLOW_SETTING}=true on this forwarder to allow the host's and its own"
        )

    def check(self, fd: int, path: str, field: str) -> None:
        """Raise :class:`NamespaceRefused` naming ``field`` if the namespace open at ``fd`` may
        not be a workload's."""
        problem = self.refusal(netns_identity(fd))
        if problem is not None:
            raise NamespaceRefused(field, f"{quoted(path, SHOWN)} {problem}")

    def open(self, path: str, field: str = "netns") -> int:
        """:func:`sdk.netns.open_netns`, then :meth:`check`; the caller closes the fd."""
        fd = open_netns(path, field)
        try:
            self.check(fd, path, field)
        except BaseException:
            os.close(fd)
            raise
        return fd


DEFAULT_GUARD = NamespaceGuard()
"""The process's guard; ``python -m forwarder`` sets ``allow_host`` from its settings."""


def _new_netlink_socket() -> socket.socket:
    return socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )


async def netlink_socket_in(
    path: str | None, guard: NamespaceGuard | None = None
) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace at ``path`` (``None``: the current namespace),
    which ``guard`` (default :data:`DEFAULT_GUARD`) must accept as a workload namespace."""
    if path is None:
        return _new_netlink_socket()
    fd = (guard or DEFAULT_GUARD).open(path)
    try:
        return await socket_in_fd(fd, _new_netlink_socket, path)
    finally:
        os.close(fd)


def find_namespaces(include: Callable[[str], bool] = lambda _p: True) -> dict[NsId, str]:
    """Namespace identity (dev, inode) -> one path for it; named namespaces are preferred."""
    found: dict[NsId, str] = {}
    candidates = sorted(glob.glob(f"{NAMED_NETNS_DIR}/*")) + sorted(
        glob.glob("/proc/[0-9]*/ns/net"), key=lambda p: int(p.split("/")[2])
    )
    for path in candidates:
        ident = ns_id(path)
        if ident is not None and ident not in found and include(path):
            found[ident] = path
    return found


def workload_namespaces(guard: NamespaceGuard | None = None) -> dict[NsId, str]:
    """:func:`find_namespaces` without the ones ``guard`` refuses (own and host by default)."""
    guard = guard or DEFAULT_GUARD
    return {
        ident: path for ident, path in find_namespaces().items() if guard.refusal(ident) is None
    }


def resolve_ref(
    ref: PathRef | InodeRef, field: str = "netns", guard: NamespaceGuard | None = None
) -> str:
    """Check that a parsed reference names an existing network namespace that ``guard``
    accepts as a workload's and return its path."""
    guard = guard or DEFAULT_GUARD
    if isinstance(ref, PathRef):
        os.close(guard.open(ref.path, field))
        return ref.path
    ident = (ref.dev, ref.ino)
    problem = guard.refusal(ident)
    if problem is not None:
        raise NamespaceRefused(field, f"inode://{ref.dev}/{ref.ino} {problem}")
    if guard.allow_host and ident == own_netns_id():
        return f"/proc/{os.getpid()}/ns/net"
    path = workload_namespaces(guard).get(ident)
    if path is None:
        raise NotFound(
            f"{field}: no network namespace has inode {ref.dev}/{ref.ino} (looked in "
            f"{NAMED_NETNS_DIR} and /proc/PID/ns/net; is the workload still running?)"
        )
    os.close(guard.open(path, field))  # it is still a namespace file (and still acceptable)
    return path
