"""Network-namespace files and sockets created inside a namespace, without forking.

* :func:`open_netns` opens a namespace file and checks that it really is a network namespace;
  it never creates anything (a typo gives ``NotFound``, not a new namespace).
* :func:`socket_in` creates a socket that belongs to a namespace by calling ``setns()`` in a
  dedicated, short-lived thread (a socket stays bound to the namespace it was created in). No
  process is forked, which keeps it safe in processes that run grpcio.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import socket
import threading
from collections.abc import Callable

from sdk.errors import DataplaneError, InvalidArgument, NotFound

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


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


async def socket_in(path: str | None, make: Callable[[], socket.socket]) -> socket.socket:
    """The socket ``make()`` returns, created in the namespace at ``path`` (None: current)."""
    if path is None:
        return make()
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
            setns(fd)
            sock = make()
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
