"""A closed vWire's wireguard-go kept for the next vWire of its namespace
(``UserspaceBackend(tun_in_netns=True, reuse=N)``, :meth:`UserspaceBackend.retire`), against
real daemons in real namespaces: retired, the daemon keeps running with no key, no port and no
peer, its TUN down and bare under a pooled name; the next ``create`` into that namespace at that
MTU takes it (same process) with a new key and port and carries traffic; anything else (another
namespace or MTU, reuse off, its time up, its namespace deleted) gets or leaves no kept daemon,
and nothing is left behind.

Topology: :mod:`tests.privileged.test_wireguard_userspace`'s two underlay namespaces, plus an
overlay namespace per test for side A's interface.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY

from forwarder.wireguard import UserspaceBackend, generate_keypair
from forwarder.wireguard.uapi import SOCKET_DIR
from sdk.errors import AlreadyExists
from tests.privileged.conftest import netns_path

from .crashed_forwarder import crashed_forwarder
from .test_wireguard_tun_in_netns import made_in as made_in_overlay
from .test_wireguard_userspace import (
    Side,
    killed_and_restarted,
    make_side,
    peer_of,
    ping,
    process_alive,
    sh,
    underlay,
    wg_name,
)

__all__ = ["underlay"]

pytestmark = pytest.mark.privileged

MTU = 1380
PORTS = iter(range(52700, 52800))  # tunnel ports, given as the forwarder gives them


@pytest.fixture
async def backend() -> AsyncIterator[UserspaceBackend]:
    be = UserspaceBackend(tun_in_netns=True, reuse=2)
    try:
        yield be
    finally:
        pids = [be.pid(name) for name in be.interfaces()]
        pids += [device.process.pid for device in be.retired.items()]
        await be.close()
        assert not [pid for pid in pids if pid is not None and process_alive(pid)]


async def made_in(be: UserspaceBackend, ns: str, overlay: str, n: int,
                  mtu: int = MTU) -> Side:
    """Side ``n`` on the next tunnel port, its TUN in ``overlay`` (a new one or a kept one),
    marked ``vwire:test/<n>``."""
    return await made_in_overlay(be, ns, overlay, n, port=next(PORTS), mtu=mtu,
                                 alias=f"vwire:test/{n}")


async def up_as(a: Side, b: Side, be: UserspaceBackend, overlay: str, name: str) -> None:
    """``a`` peered with ``b`` (and ``b`` with it), renamed ``name`` in ``overlay`` and up with
    its addresses, as a forwarder leaves a vWire's interface; echo passes."""
    await be.set_peer(a.ifname, peer_of(b))
    await be.set_peer(b.ifname, peer_of(a))
    await sh("ip", "link", "set", a.ifname, "name", name, netns=overlay)
    await sh("ip", "addr", "add", f"{a.overlay4}/24", "dev", name, netns=overlay)
    await sh("ip", "addr", "add", f"{a.overlay6}/64", "dev", name, "nodad", netns=overlay)
    await sh("ip", "link", "set", name, "up", netns=overlay)
    if b.ifname not in await sh("ip", "-o", "addr", netns=b.ns):
        await sh("ip", "addr", "add", f"{b.overlay4}/24", "dev", b.ifname, netns=b.ns)
        await sh("ip", "link", "set", b.ifname, "up", netns=b.ns)
    assert await ping(overlay, b.overlay4)
    assert await ping(b.ns, a.overlay4)


def daemons(state: str) -> float | None:
    """``vwire_wireguard_daemons{state=...}`` now."""
    return REGISTRY.get_sample_value("vwire_wireguard_daemons", {"state": state})


def kept(be: UserspaceBackend) -> list[tuple[str, int | None]]:
    """(name of its TUN, pid) of every daemon kept."""
    return [(str(d.idle_name), d.process.pid) for d in be.retired.items()]


async def gone(pid: int, within: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while process_alive(pid):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_retired_daemon_is_wiped_then_serves_the_next_vwire_of_its_namespace(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    overlay = netns("ov")
    a = await made_in(backend, underlay[0], overlay, 1)
    b = await make_side(backend, underlay[1], 2)
    await up_as(a, b, backend, overlay, "ep0")
    pid, socket = backend.pid(a.ifname), SOCKET_DIR / f"{a.ifname}.sock"
    assert backend.baseline(a.ifname) is None  # a new TUN counts from 0

    await backend.retire(a.ifname, netns_path(overlay), "ep0")
    [(idle, kept_pid)] = kept(backend)
    assert kept_pid == pid and pid is not None and process_alive(pid)
    assert a.ifname not in backend.interfaces()
    assert (daemons("kept"), daemons("serving")) == (1, 1)  # b serves
    links = await sh("ip", "-o", "link", netns=overlay)
    assert "ep0" not in links and re.match(r"vwp[0-9a-f]{6}$", idle)
    shown = await sh("ip", "-o", "link", "show", idle, netns=overlay)
    assert "state DOWN" in shown and f"mtu {MTU}" in shown
    assert f"vwire-pool:{os.getpid()}" in await sh("ip", "-d", "link", "show", idle, netns=overlay)
    shadow = await sh("ip", "-d", "link", "show", a.ifname, netns=a.ns)  # no vWire's any more
    assert f"vwire-pool:{os.getpid()}" in shadow and "vwire:test" not in shadow
    assert await sh("ip", "-o", "addr", "show", "dev", idle, netns=overlay) == ""
    assert await sh("ip", "route", "show", "dev", idle, netns=overlay) == ""
    wiped = await sh("wg", "show", a.ifname, "dump", netns=a.ns)  # its socket: its first name
    assert wiped.split("\t")[0] == "(none)" and len(wiped.strip().splitlines()) == 1
    assert f":{a.port} " not in await sh("ss", "-Hulpn", netns=a.ns)  # the tunnel port is free
    assert not await ping(b.ns, a.overlay4, within=0.5)

    # Another namespace, or another MTU, does not take it: a new daemon.
    other = await made_in(backend, underlay[0], netns("ov2"), 3)
    narrower = await made_in(backend, underlay[0], overlay, 4, mtu=MTU - 100)
    assert pid not in (backend.pid(other.ifname), backend.pid(narrower.ifname))
    assert [p for _, p in kept(backend)] == [pid]

    c = await made_in(backend, underlay[0], overlay, 5)
    assert backend.pid(c.ifname) == pid and kept(backend) == []
    assert (daemons("kept"), daemons("serving")) == (0, 4)
    assert socket.exists()
    shown = await sh("ip", "-d", "link", "show", c.ifname, netns=overlay)
    assert "vwire:test/5" in shown and f"mtu {MTU}" in shown and "state DOWN" in shown
    assert "vwire:test/5" in await sh("ip", "-d", "link", "show", a.ifname, netns=a.ns)
    baseline = backend.baseline(c.ifname)
    assert baseline is not None and baseline.rx_packets > 0 and baseline.tx_packets > 0
    await up_as(c, b, backend, overlay, "ep1")  # a new key and port: echo passes again
    assert f":{c.port} " in await sh("ss", "-Hulpn", netns=a.ns)
    await backend.delete(c.ifname)
    assert await gone(pid)
    assert not socket.exists()
    assert a.ifname not in await sh("ip", "-o", "link", netns=a.ns)  # its shadow too
    assert "ep1" not in await sh("ip", "-o", "link", netns=overlay)


async def test_off_it_is_deleted_and_kept_ones_end_in_time_or_with_their_namespace(
    underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    off = UserspaceBackend(tun_in_netns=True)
    try:
        overlay = netns("ov")
        a = await made_in(off, underlay[0], overlay, 1)
        pid = off.pid(a.ifname)
        assert pid is not None
        await off.retire(a.ifname, netns_path(overlay), a.ifname)
        assert await gone(pid) and kept(off) == []
        assert a.ifname not in await sh("ip", "-o", "link", netns=underlay[0])
    finally:
        await off.close()

    brief = UserspaceBackend(tun_in_netns=True, reuse=2, reuse_idle=0.3)
    try:
        overlay = netns("ov2")
        a = await made_in(brief, underlay[0], overlay, 1)
        pid = brief.pid(a.ifname)
        await brief.retire(a.ifname, netns_path(overlay), a.ifname)
        assert pid is not None and kept(brief) == [(kept(brief)[0][0], pid)]
        assert await gone(pid), "kept past its time"
        await brief.retired.stopped()
        assert kept(brief) == []
        assert "vwp" not in await sh("ip", "-o", "link", netns=overlay)
        assert a.ifname not in await sh("ip", "-o", "link", netns=underlay[0])
        assert not (SOCKET_DIR / f"{a.ifname}.sock").exists()

        doomed = netns("ov3")
        d = await made_in(brief, underlay[0], doomed, 2)
        brief.retired.idle = 60.0
        pid = brief.pid(d.ifname)
        await brief.retire(d.ifname, netns_path(doomed), d.ifname)
        assert pid is not None and [p for _, p in kept(brief)] == [pid]
        await sh("ip", "netns", "del", doomed)
        assert await gone(pid), "a deleted namespace's kept daemon ran on"
        for _ in range(100):
            if not kept(brief) and d.ifname not in await sh("ip", "-o", "link",
                                                            netns=underlay[0]):
                break
            await asyncio.sleep(0.05)
        assert kept(brief) == []
        assert d.ifname not in await sh("ip", "-o", "link", netns=underlay[0])
    finally:
        await brief.close()


async def test_a_kept_daemon_that_cannot_be_taken_is_stopped_and_nothing_is_left(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    """The name asked for is taken in the namespace: the kept daemon cannot be renamed to it,
    so it is stopped, and a new daemon cannot have it either: the create fails naming it, and
    neither daemon, TUN, shadow nor socket is left."""
    overlay = netns("ov")
    a = await made_in(backend, underlay[0], overlay, 1)
    pid = backend.pid(a.ifname)
    await backend.retire(a.ifname, netns_path(overlay), a.ifname)
    taken = wg_name()
    await sh("ip", "link", "add", taken, "type", "veth", "peer", "name", "probe1", netns=overlay)
    private, _ = generate_keypair()
    with pytest.raises(AlreadyExists, match=taken):
        await backend.create(taken, netns_path(underlay[0]), private, next(PORTS), mtu=MTU,
                             netns=netns_path(overlay))
    assert pid is not None and await gone(pid)
    assert kept(backend) == [] and backend.interfaces() == []
    assert "vwp" not in await sh("ip", "-o", "link", netns=overlay)
    assert a.ifname not in await sh("ip", "-o", "link", netns=underlay[0])
    assert taken not in await sh("ip", "-o", "link", netns=underlay[0])
    assert not (SOCKET_DIR / f"{a.ifname}.sock").exists()
    assert not (SOCKET_DIR / f"{taken}.sock").exists()


async def test_a_name_whose_socket_a_reused_daemon_holds_is_still_made_and_restarts_work(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    """Daemons keep the socket of the name they started as. A vWire of that name made again
    while its old daemon serves another starts its daemon under another socket name; deleting
    either leaves the other's running; a killed reused daemon comes back on its socket name
    with its TUN under the vWire's name."""
    overlay = netns("ov")
    a = await made_in(backend, underlay[0], overlay, 1)
    first = backend.pid(a.ifname)
    await backend.retire(a.ifname, netns_path(overlay), a.ifname)
    c = await made_in(backend, underlay[0], overlay, 1)
    assert backend.pid(c.ifname) == first

    private, _ = generate_keypair()
    await backend.create(a.ifname, netns_path(underlay[0]), private, next(PORTS), mtu=MTU,
                         netns=netns_path(overlay))
    again = backend.pid(a.ifname)
    assert again not in (None, first)
    assert a.ifname in await sh("ip", "-o", "link", netns=overlay)
    await backend.delete(a.ifname)
    assert again is not None and await gone(again)
    assert first is not None and process_alive(first)
    assert (SOCKET_DIR / f"{a.ifname}.sock").exists()  # the reused daemon's, still answering

    b = await make_side(backend, underlay[1], 2)
    await killed_and_restarted(backend, c.ifname)
    restarted = backend.pid(c.ifname)
    assert restarted not in (None, first)
    shown = await sh("ip", "-o", "link", "show", c.ifname, netns=overlay)
    assert f"mtu {MTU}" in shown
    await up_as(c, b, backend, overlay, c.ifname)
    await backend.delete(c.ifname)
    assert restarted is not None and await gone(restarted)
    assert not (SOCKET_DIR / f"{a.ifname}.sock").exists()


async def test_a_killed_forwarders_kept_daemons_end_when_its_successor_sweeps(
    underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    """A forwarder killed with daemons kept leaves them running (nothing they print would
    fail); the next one's sweep deletes their TUNs, marked with the dead pid, which ends them,
    and their shadows."""
    overlay, name = netns("ov"), wg_name()
    async with crashed_forwarder(netns_path(underlay[0]), netns_path(overlay), name,
                                 retire=True) as (daemon, idle):
        await asyncio.sleep(0.3)
        assert process_alive(daemon), "the kept daemon should outlive its forwarder until a sweep"
        assert idle in await sh("ip", "-o", "link", netns=overlay)
        successor = UserspaceBackend(tun_in_netns=True, reuse=2)
        try:
            removed = await successor.pool.sweep(netns_path(underlay[0]))
            assert idle in removed and name in removed  # the TUN and the shadow
            assert await gone(daemon), "its daemon ran on after its TUN was deleted"
            assert name not in await sh("ip", "-o", "link", netns=underlay[0])
            assert not (SOCKET_DIR / f"{name}.sock").exists()
        finally:
            await successor.close()
