"""Network-namespace plumbing without forking: sockets made by ``setns()`` in a throwaway thread.

Contract:
- :func:`socket_in_netns` returns a socket created inside the namespace at ``path`` (None = the
  current one). Only a dedicated short-lived thread ever calls ``setns()``, so no other thread
  of the process (asyncio loop, gRPC) changes namespace, and nothing forks (forking a gRPC
  process crashes it, see NOTES.md).
- :func:`netns_argv` is the argv prefix that runs a program inside a namespace (``nsenter``
  execs in place, so the child's pid is the program's pid).
- A missing namespace file raises :class:`sdk.errors.NotFound` naming the path.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import socket
import threading

from sdk.errors import NotFound

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def check_netns(path: str, field: str = "netns") -> str:
    """Fail with NotFound unless ``path`` names an existing namespace file."""
    if not os.path.exists(path):
        raise NotFound(f"{field}: network namespace {path} does not exist")
    return path


def open_netns(path: str, field: str = "netns") -> int:
    """An O_RDONLY fd of the namespace file (caller closes it)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{field}: network namespace {path} does not exist") from None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _socket_in_thread(path: str, family: int, kind: int, proto: int) -> socket.socket:
    fd = open_netns(path)
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            _setns(fd)
            result.append(socket.socket(family, kind, proto))
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    try:
        thread = threading.Thread(target=target, name="netns-socket", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if failure:
        raise failure[0]
    return result[0]


async def socket_in_netns(
    path: str | None, family: int, kind: int, proto: int = 0
) -> socket.socket:
    """A socket created in the namespace at ``path`` (None = the current namespace)."""
    if path is None:
        return socket.socket(family, kind, proto)
    return await asyncio.to_thread(_socket_in_thread, path, family, kind, proto)


def netns_argv(path: str | None) -> list[str]:
    """Argv prefix running a program in the namespace at ``path`` (empty for None)."""
    if path is None:
        return []
    return ["nsenter", f"--net={check_netns(path)}", "--"]
