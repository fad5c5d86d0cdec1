"""Namespace helpers the WireGuard backends need beyond :mod:`forwarder.kernel.netns`.

Contract:
- :func:`check_netns` validates a namespace path with the kernel layer's ``open_netns`` (NotFound
  for a missing file, InvalidArgument for a file that is not a network namespace).
- :func:`netns_argv` is the argv prefix that runs a program inside a namespace (``nsenter``
  execs in place, so the child's pid is the program's pid).
- :func:`genl_socket_in` makes a NETLINK_GENERIC socket inside a namespace with
  :func:`sdk.netns.socket_in` (``setns()`` in a throwaway thread, never a fork).
"""

from __future__ import annotations

import os
import socket

from sdk.netns import open_netns, socket_in

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


async def genl_socket_in(path: str | None) -> socket.socket:
    """A NETLINK_GENERIC socket in the namespace at ``path`` (None = the current namespace)."""
    return await socket_in(path, _genl_socket)
