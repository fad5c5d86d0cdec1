"""Namespace helpers the WireGuard backends need beyond :mod:`forwarder.kernel.netns`.

Contract:
- :func:`check_netns` validates a namespace path with the kernel layer's ``open_netns`` (NotFound
  for a missing file, InvalidArgument for a file that is not a network namespace).
- :func:`netns_argv` is the argv prefix that runs a program inside a namespace (``nsenter``
  execs in place, so the child's pid is the program's pid).
- :func:`genl_socket_in` makes a NETLINK_GENERIC socket inside a namespace with ``setns()`` in a
  throwaway thread (never a fork: forking a gRPC process crashes it, see NOTES.md). It exists
  because ``forwarder.kernel.netns.netlink_socket_in`` only makes NETLINK_ROUTE sockets.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading

from forwarder.kernel.netns import CLONE_NEWNET, open_netns
from sdk.errors import DataplaneError

_libc = ctypes.CDLL(None, use_errno=True)
NETLINK_GENERIC = 16


def check_netns(path: str, field: str = "netns") -> str:
    """``path`` if it names an existing network namespace, else NotFound/InvalidArgument."""
    os.close(open_netns(path, field))
    return path


def netns_argv(path: str | None) -> list[str]:
    """Argv prefix running a program in the namespace at ``path`` (empty for None)."""
    if path is None:
        return []
    return ["nsenter", f"--net={check_netns(path)}", "--"]


def _genl_socket() -> socket.socket:
    return socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_GENERIC
    )


def _genl_socket_in_thread(path: str) -> socket.socket:
    fd = open_netns(path)
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def in_thread() -> None:  # setns() switches only this thread, which ends right away
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            made.append(_genl_socket())
        except OSError as exc:
            failed.append(exc)

    try:
        thread = threading.Thread(target=in_thread, name="netns-genl-socket", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if failed:
        raise DataplaneError(f"cannot enter network namespace {path}: {failed[0]}")
    return made[0]


async def genl_socket_in(path: str | None) -> socket.socket:
    """A NETLINK_GENERIC socket in the namespace at ``path`` (None = the current namespace)."""
    if path is None:
        return _genl_socket()
    return await asyncio.to_thread(_genl_socket_in_thread, path)
