"""Link operations the WireGuard backends need, over rtnetlink in any namespace.

Contract:
- Every operation opens its rtnetlink socket with :func:`.netns.socket_in_netns` (setns in a
  throwaway thread, never pyroute2's forking helper) and closes it before returning.
- :func:`move_link` is ``ip link set IFNAME netns TARGET``: the link keeps its index-less
  identity (name) and arrives DOWN; for WireGuard the UDP socket stays where it was made.
- Errors: no such link -> :class:`NotFound`; any other netlink failure -> :class:`DataplaneError`
  with the netlink code. :func:`delete_link` treats a missing link as done.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from sdk.errors import DataplaneError, NotFound

from .netns import open_netns, socket_in_netns


@asynccontextmanager
async def rtnl(netns: str | None) -> AsyncIterator[Any]:
    """An ``AsyncIPRoute`` bound to the namespace at ``netns`` (None = current)."""
    sock = await socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    ipr = AsyncIPRoute(use_socket=sock)
    try:
        await ipr.setup_endpoint()
        yield ipr
    finally:
        ipr.close()
        sock.close()


def _where(netns: str | None) -> str:
    return netns or "the current namespace"


async def _index(ipr: Any, ifname: str, netns: str | None) -> int:
    found = await ipr.link_lookup(ifname=ifname)
    if not found:
        raise NotFound(f"interface {ifname} does not exist in {_where(netns)}")
    return int(found[0])


async def link_exists(ifname: str, netns: str | None) -> bool:
    """Whether ``ifname`` exists in ``netns``."""
    async with rtnl(netns) as ipr:
        return bool(await ipr.link_lookup(ifname=ifname))


async def add_link(ifname: str, kind: str, netns: str | None) -> None:
    """Create a link of ``kind`` (left DOWN)."""
    async with rtnl(netns) as ipr:
        try:
            await ipr.link("add", ifname=ifname, kind=kind)
        except NetlinkError as exc:
            raise DataplaneError(
                f"creating {kind} link {ifname} in {_where(netns)} failed: netlink error "
                f"{exc.code} ({os.strerror(exc.code)})"
            ) from None


async def move_link(ifname: str, netns: str | None, target_netns: str) -> None:
    """Move ``ifname`` from ``netns`` into ``target_netns``."""
    target_fd = open_netns(target_netns, "target_netns")
    try:
        async with rtnl(netns) as ipr:
            index = await _index(ipr, ifname, netns)
            try:
                await ipr.link("set", index=index, net_ns_fd=target_fd)
            except NetlinkError as exc:
                raise DataplaneError(
                    f"moving {ifname} from {_where(netns)} to {target_netns} failed: netlink "
                    f"error {exc.code} ({os.strerror(exc.code)})"
                ) from None
    finally:
        os.close(target_fd)


async def delete_link(ifname: str, netns: str | None) -> None:
    """Delete ``ifname`` from ``netns``; a missing link (or namespace) counts as deleted."""
    if netns is not None and not os.path.exists(netns):
        return
    async with rtnl(netns) as ipr:
        found = await ipr.link_lookup(ifname=ifname)
        if not found:
            return
        try:
            await ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise DataplaneError(
                    f"deleting {ifname} in {_where(netns)} failed: netlink error {exc.code} "
                    f"({os.strerror(exc.code)})"
                ) from None
