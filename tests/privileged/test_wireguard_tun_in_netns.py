"""wireguard-go handed a TUN made in the workload's namespace (``UserspaceBackend(tun_in_netns=
True)``), against real daemons in real namespaces: the interface is born where the workload is,
its UDP socket stays in the underlay, nothing is moved, a DOWN shadow of the same name sits in
the underlay at the vWire's MTU while the daemon runs, and every end (delete, a refused name, a
daemon killed and restarted) leaves nothing behind.

Topology: :mod:`tests.privileged.test_wireguard_userspace`'s two underlay namespaces, plus an
overlay namespace per test for side A's interface.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from forwarder.kernel import KernelPort, real_kernel
from forwarder.wireguard import UserspaceBackend, generate_keypair
from forwarder.wireguard.detect import wireguard_go_version
from forwarder.wireguard.uapi import SOCKET_DIR
from forwarder.wireguard.userspace import TUN_IN_NETNS_VERSIONS
from sdk.errors import AlreadyExists, FabricError
from tests.privileged.conftest import netns_path

from .test_wireguard_userspace import (
    Events,
    Side,
    bring_up,
    killed_and_restarted,
    make_side,
    peer_and_bring_up,
    ping,
    process_alive,
    sh,
    underlay,
    wg_name,
    works_from,
)

__all__ = ["underlay"]

pytestmark = pytest.mark.privileged

MTU = 1380  # not wireguard-go's default (1420): the daemon must have learnt it


class Recording:
    """A real kernel port that records the names of the methods called on it."""

    def __init__(self, inner: KernelPort) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return target(*args, **kwargs)

        return recorded


@pytest.fixture
async def kernel() -> Recording:
    return Recording(real_kernel())


@pytest.fixture
async def backend(kernel: Recording) -> AsyncIterator[UserspaceBackend]:
    be = UserspaceBackend(kernel=kernel, tun_in_netns=True)  # type: ignore[arg-type]
    try:
        yield be
    finally:
        await be.close()


async def links(netns: str) -> str:
    return await sh("ip", "-o", "link", netns=netns)


async def made_in(be: UserspaceBackend, ns: str, overlay: str, n: int, *, port: int = 0,
                  mtu: int = MTU, alias: str | None = None) -> Side:
    """Side ``n`` with its socket in ``ns`` and its TUN made in ``overlay`` (or one kept there)
    at ``mtu``, on ``port`` (0: the daemon's choice), marked ``alias``."""
    private, public = generate_keypair()
    ifname = wg_name()
    port = await be.create(ifname, netns_path(ns), private, port, mtu=mtu,
                           netns=netns_path(overlay), alias=alias)
    return Side(ns, ifname, private, public, port, f"192.0.2.{n}", f"fd00:0:1::{n}",
                f"10.77.0.{n}", f"fd77::{n}")


@pytest.fixture
async def sides(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str],
) -> tuple[str, Side, Side]:
    """An overlay namespace, side A's TUN made in it, and side B in its own underlay."""
    overlay = netns("ov")
    a = await made_in(backend, underlay[0], overlay, 1)
    return overlay, a, await make_side(backend, underlay[1], 2)


async def test_the_installed_wireguard_go_is_one_verified_for_it() -> None:
    assert await wireguard_go_version() in TUN_IN_NETNS_VERSIONS


async def test_tun_made_in_the_workload_namespace_carries_traffic_and_nothing_moves(
    backend: UserspaceBackend, kernel: Recording, sides: tuple[str, Side, Side],
) -> None:
    overlay, a, b = sides
    # Born in the overlay at the vWire's MTU, DOWN; the shadow of its name in the underlay,
    # DOWN at the same MTU, which the daemon pads to.
    shown = await sh("ip", "-o", "link", "show", a.ifname, netns=overlay)
    assert f"mtu {MTU}" in shown and "state DOWN" in shown
    shadow = await sh("ip", "-o", "link", "show", a.ifname, netns=a.ns)
    assert f"mtu {MTU}" in shadow and "UP" not in shadow.split(">")[0]
    assert backend.daemon_mtu(a.ifname) == MTU
    await works_from(backend, overlay, a, b)
    await backend.move(a.ifname, netns_path(a.ns), netns_path(overlay))  # already there
    assert "move_link" not in kernel.calls
    pid = backend.pid(a.ifname)
    await backend.delete(a.ifname)
    assert pid is not None and not process_alive(pid)
    assert a.ifname not in await links(overlay)
    assert a.ifname not in await links(a.ns)
    assert not (SOCKET_DIR / f"{a.ifname}.sock").exists()
    # With no TUN made in a namespace left, nothing keeps checking namespaces.
    assert await watch_ends(), "the namespace check outlived the last TUN it watched"


async def test_the_tun_and_its_shadow_are_made_marked_and_the_tun_at_its_mtu(
    backend: UserspaceBackend, kernel: Recording, underlay: tuple[str, str],
    netns: Callable[[str], str],
) -> None:
    """The alias and the TUN's MTU come with the calls that make the links: the only link
    change left is the shadow's MTU, which must follow the daemon's start."""
    overlay = netns("ov")
    ifname = wg_name()
    await backend.create(ifname, netns_path(underlay[0]), generate_keypair()[0], 0, mtu=MTU,
                         netns=netns_path(overlay), alias=f"vwire:c1 wg={ifname}")
    for ns in (overlay, underlay[0]):
        shown = await sh("ip", "-o", "link", "show", ifname, netns=ns)
        assert f"mtu {MTU}" in shown and f"alias vwire:c1 wg={ifname}" in shown
    assert kernel.calls.count("open_tun") == 2 and kernel.calls.count("set_link") == 1
    await backend.delete(ifname)


async def watch_ends(within: float = 2.0) -> bool:
    """Whether the backend's namespace check task is gone within ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while any(task.get_name() == "wg-netns-watch" for task in asyncio.all_tasks()):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_taken_name_in_the_workload_namespace_leaves_nothing(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    overlay = netns("ov")
    ifname = wg_name()
    await sh("ip", "link", "add", ifname, "type", "veth", "peer", "name", "other",
             netns=overlay)
    before = (await links(overlay), await links(underlay[0]))
    with pytest.raises(AlreadyExists, match=ifname):
        await backend.create(ifname, netns_path(underlay[0]), generate_keypair()[0], 0,
                             mtu=MTU, netns=netns_path(overlay))
    assert (await links(overlay), await links(underlay[0])) == before
    assert backend.interfaces() == []
    assert not (SOCKET_DIR / f"{ifname}.sock").exists()


async def test_a_killed_daemon_comes_back_on_a_new_tun_in_the_workload_namespace(
    backend: UserspaceBackend, kernel: Recording, sides: tuple[str, Side, Side],
) -> None:
    overlay, a, b = sides
    await peer_and_bring_up(backend, a, b, overlay)
    assert await ping(overlay, b.overlay4)
    await killed_and_restarted(backend, a.ifname)
    # A new TUN in the overlay at the vWire's MTU, DOWN (addresses are the subscriber's); the
    # shadow kept; the new daemon pads to the MTU again.
    shown = await sh("ip", "-o", "link", "show", a.ifname, netns=overlay)
    assert f"mtu {MTU}" in shown and "state DOWN" in shown
    assert f"mtu {MTU}" in await sh("ip", "-o", "link", "show", a.ifname, netns=a.ns)
    assert backend.daemon_mtu(a.ifname) == MTU
    await bring_up(a, overlay)
    assert await ping(overlay, b.overlay4)
    assert await ping(b.ns, a.overlay6)
    assert "move_link" not in kernel.calls


async def test_open_tun_ends_with_its_descriptor_persists_on_request_and_never_attaches(
    netns: Callable[[str], str],
) -> None:
    ns = netns("tun")
    kernel = real_kernel()
    fd = await kernel.open_tun(netns_path(ns), "vtun0", packet_info=True)
    assert fd is not None
    assert "vtun0" in await links(ns)
    os.close(fd)
    assert "vtun0" not in await links(ns)  # gone with the last descriptor
    assert await kernel.open_tun(netns_path(ns), "vtun1", packet_info=True, persist=True) is None
    assert "vtun1" in await links(ns)
    # A persistent TUN of that name is refused, not silently attached to.
    with pytest.raises(AlreadyExists, match="vtun1"):
        await kernel.open_tun(netns_path(ns), "vtun1", packet_info=True)
    await kernel.delete_link(netns_path(ns), "vtun1")
    assert "vtun1" not in await links(ns)


async def test_a_deleted_workload_namespace_ends_the_daemon_and_is_not_kept(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    """The daemon's TUN file would keep the workload's namespace alive: the backend notices the
    name is gone, stops the daemon (its restart finds no namespace: ``restart_failed``) and the
    namespace ends, taking along what else was in it (here one end of a veth pair)."""
    overlay = netns("ov")
    await sh("ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1", "netns",
             netns_path(underlay[0]), netns=overlay)
    a = await made_in(backend, underlay[0], overlay, 1)
    events = Events(backend, "restart_failed")
    pid = backend.pid(a.ifname)
    assert pid is not None
    await sh("ip", "netns", "del", overlay)
    await events.wait(15)
    assert events.kinds() == ["exited", "restart_failed"]
    assert not process_alive(pid)

    async def namespace_ended() -> bool:
        return "probe1" not in await links(underlay[0])

    deadline = asyncio.get_running_loop().time() + 5
    while not await namespace_ended():
        assert asyncio.get_running_loop().time() < deadline, "the namespace was kept alive"
        await asyncio.sleep(0.05)
    await backend.delete(a.ifname)
    assert a.ifname not in await links(underlay[0])  # the shadow too


@pytest.mark.parametrize("persist", [False, True])
async def test_open_tun_sets_mtu_and_alias_or_leaves_no_device(
    netns: Callable[[str], str], persist: bool,
) -> None:
    ns = netns("tun")
    kernel = real_kernel()
    fd = await kernel.open_tun(netns_path(ns), "vtun3", packet_info=True, persist=persist,
                               mtu=1380, alias="vwire:c1")
    shown = await sh("ip", "-o", "link", "show", "vtun3", netns=ns)
    assert "mtu 1380" in shown and "alias vwire:c1" in shown
    if fd is not None:
        os.close(fd)
    else:
        await kernel.delete_link(netns_path(ns), "vtun3")
    before = await links(ns)
    with pytest.raises(FabricError, match="vtun4"):  # above what a TUN takes
        await kernel.open_tun(netns_path(ns), "vtun4", packet_info=True, persist=persist,
                              mtu=70000, alias="vwire:c2")
    assert await links(ns) == before


@pytest.mark.parametrize("persist", [False, True])
async def test_open_tun_cancelled_while_queued_leaves_no_device(
    netns: Callable[[str], str], persist: bool,
) -> None:
    """A caller cancelled while its TUN is still being made (as a preparation is when its
    request fails) must not leave the device behind, held by a descriptor nobody closes or
    persistent."""
    ns = netns("tun")
    kernel = real_kernel()
    await kernel.set_link(netns_path(ns), "lo", up=True)  # the namespace's worker exists
    opening = asyncio.ensure_future(
        kernel.open_tun(netns_path(ns), "vtun2", packet_info=True, persist=persist))
    await asyncio.sleep(0)  # submitted to the worker
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await kernel.set_link(netns_path(ns), "lo", up=True)  # after the open in the worker's queue
    assert "vtun2" not in await links(ns)
