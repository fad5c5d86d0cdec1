"""Find, remove or adopt what a previous (crashed) forwarder run left behind.

Everything the data plane creates carries the ``vwire:`` marker (:mod:`forwarder.vwire.naming`),
so at start the forwarder can list marked interfaces in its own and every other visible
namespace (:func:`find_leftovers`), then either remove them (:func:`sweep`, which keeps the
connection ids it is told to keep) or rebuild a handle to manage them again (:func:`adopt`).
Removing an interface removes its addresses, routes and neighbours. The WireGuard devices among
them are deleted through the backend first (which stops a daemon it runs), then the interfaces,
then the backend reaps each device (a previous run's daemon ends with its TUN and leaves its
control socket, which the backend then unlinks): a device's interfaces (a TUN in a workload's
namespace, its shadow in the underlay) are all deleted before its daemon is waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import suppress
from dataclasses import dataclass
from functools import partial

import structlog

from forwarder.kernel import KernelPort, Netns
from forwarder.wireguard import WireGuardBackend
from forwarder.wireguard.model import validate_ifname
from sdk.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

from .handle import End, VWire
from .naming import parse_marker

_log = structlog.get_logger()


@dataclass(frozen=True)
class Leftover:
    """One marked interface: where it is, whose it is, and its WireGuard name if it is one."""

    netns: Netns
    ifname: str
    connection_id: str
    wg_name: str | None
    mtu: int
    owner: int | None = None  #: the pid of the forwarder that made it (None: not recorded)


async def find_leftovers(
    kernel: KernelPort, namespaces: Collection[Netns] | None = None
) -> list[Leftover]:
    """Every interface carrying the vWire marker in ``namespaces`` (default: the forwarder's own
    and every other namespace visible to it)."""
    found = []
    if namespaces is None:
        namespaces = [None, *await kernel.list_namespaces()]
    for netns in namespaces:
        try:
            links = await kernel.list_links(netns, alias_prefix="vwire:")
        except (NotFound, PermissionDenied, InvalidArgument):
            # vanished, its /proc/PID is another's now, or it is being deleted: `ip netns
            # delete` unmounts the namespace before it unlinks the (then plain) file
            continue
        for link in links:
            mark = parse_marker(link.alias)
            if mark is not None:
                found.append(Leftover(netns, link.name, mark.connection_id, mark.wg_name, link.mtu,
                                      mark.owner))
    return found


def _check(item: Leftover, backend: WireGuardBackend | None) -> None:
    """InvalidArgument for a marker's WireGuard name no forwarder wrote; FailedPrecondition for a
    WireGuard interface without the backend to delete it with."""
    if item.wg_name is not None:
        validate_ifname(item.wg_name, "marker wg")
        if backend is None:
            raise FailedPrecondition(
                f"sweep: {item.ifname} is a WireGuard interface: pass the WireGuard backend"
            )


async def _remove(kernel: KernelPort, backend: WireGuardBackend | None,
                  items: list[Leftover]) -> None:
    """Remove ``items`` (each :func:`_check`-ed): their WireGuard devices, then their links,
    then the reaping of those devices (module docstring)."""
    # _check let no WireGuard interface through without a backend
    devices = list(dict.fromkeys(item.wg_name for item in items if item.wg_name is not None))
    if backend is not None:
        for name in devices:
            await backend.delete(name)
    for item in items:
        with suppress(NotFound):  # gone with its veth peer or with the WireGuard process
            await kernel.delete_link(item.netns, item.ifname)
    if backend is not None:
        await backend.reap(devices)


async def sweep(
    kernel: KernelPort,
    backend: WireGuardBackend | None = None,
    keep: Collection[str] = (),
    namespaces: Collection[Netns] | None = None,
    owner: str | None = None,
    spare: Callable[[Leftover], bool] | None = None,
) -> list[Leftover]:
    """Remove every leftover (in ``namespaces``, default all) whose connection id is not in
    ``keep`` and, when ``owner`` is given, starts with ``<owner>/`` (a forwarder prefixes its
    connection ids with its name, so forwarders of other names never remove each other's
    vWires), unless ``spare`` says to keep it (forwarders of one name tell theirs apart by the
    marker's process, ``forwarder/namelock.py``); return what was removed. A marker whose
    WireGuard name is not a valid name (anyone may set an alias on an interface of theirs) is
    logged and left alone instead of failing the sweep."""
    removed = []
    for item in await find_leftovers(kernel, namespaces):
        if owner is not None and not item.connection_id.startswith(f"{owner}/"):
            continue
        if spare is not None and spare(item):
            continue
        if item.connection_id not in keep:
            try:
                _check(item, backend)
            except InvalidArgument as exc:  # a marker no forwarder wrote (aliases are anyone's)
                _log.warning("sweep_marker_invalid", netns=item.netns, ifname=item.ifname,
                             error=str(exc))
                continue
            removed.append(item)
    await _remove(kernel, backend, removed)
    return removed


def adopt(
    kernel: KernelPort,
    leftovers: Collection[Leftover],
    connection_id: str,
    backend: WireGuardBackend | None = None,
) -> VWire:
    """A handle for the leftovers of ``connection_id``: its ``close`` removes them, its
    ``metrics`` reads them (interface counters only). NotFound if there are none."""
    mine = [item for item in leftovers if item.connection_id == connection_id]
    if not mine:
        raise NotFound(f"connection_id: no leftover interfaces of connection {connection_id}")
    for item in mine:
        _check(item, backend)
    ends = tuple(End(item.ifname, item.netns, item.ifname) for item in mine)
    vwire = VWire(kernel, connection_id, min(item.mtu for item in mine), ends)
    vwire.undo.push(f"remove {', '.join(item.ifname for item in mine)}",
                    partial(_remove, kernel, backend, mine))
    return vwire
