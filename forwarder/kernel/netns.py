"""Namespace files and fork-free netlink sockets inside them (no pyroute2 here).

* :func:`open_netns` opens a namespace file and checks that it really is a network namespace;
  it never creates anything (a typo gives ``NotFound``, not a new namespace).
* :func:`netlink_socket_in` creates an ``AF_NETLINK`` socket that belongs to a namespace by
  calling ``setns()`` in a dedicated, short-lived thread (a socket stays bound to the namespace it
  was created in). No process is forked, which keeps it safe in processes that run grpcio.
* :func:`find_namespaces` lists the namespace files visible to the forwarder, once each.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import glob
import os
import socket
import threading
from collections.abc import Callable

from sdk.errors import DataplaneError, InvalidArgument, NotFound

from .nsref import NAMED_NETNS_DIR, InodeRef, PathRef

CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd: returns its CLONE_NEW* type

_libc = ctypes.CDLL(None, use_errno=True)


def open_netns(path: str, field: str = "netns") -> int:
    """Open a network-namespace file read-only; the caller closes the returned fd.

    Raises ``NotFound`` when the file does not exist and ``InvalidArgument`` naming ``field`` when
    it is not a network namespace.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(
            f"{field}: network namespace {path} does not exist (create it or pass an existing "
            "/var/run/netns/NAME or /proc/PID/ns/net)"
        ) from None
    except OSError as err:
        raise InvalidArgument(field, f"cannot open {path}: {err.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise InvalidArgument(field, f"{path} is not a network namespace file")
    return fd


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _new_netlink_socket() -> socket.socket:
    return socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )


async def netlink_socket_in(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace at ``path`` (``None``: the current namespace)."""
    if path is None:
        return _new_netlink_socket()
    fd = open_netns(path)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(result: socket.socket | None, error: BaseException | None) -> None:
        if done.cancelled():
            if result is not None:
                result.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def in_thread() -> None:
        # setns() only switches this thread, which ends right after making the socket.
        try:
            _setns(fd)
            sock = _new_netlink_socket()
        except OSError as err:
            loop.call_soon_threadsafe(
                deliver, None, DataplaneError(f"cannot enter network namespace {path}: {err}")
            )
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    try:
        threading.Thread(target=in_thread, name="netns-socket", daemon=True).start()
        return await done
    finally:
        os.close(fd)


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
