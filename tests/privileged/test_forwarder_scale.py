"""Scale defects and the kernel workers, against real namespaces and real wireguard-go (root).

- wireguard-go past the inotify budget is refused before it runs (each daemon holds an inotify
  instance; the 129th of a user died with "too many open files" at the default limit);
- tunnel ports are never chosen by the kernel for a port-0 bind (a fresh wireguard-go binds port
  0 and took tunnel ports from the ephemeral range, which contains them);
- the netlink workers: a namespace whose worker is busy does not hold up calls in another
  namespace nor the event loop; an idle workload namespace's worker ends; a link deleted and
  made again behind the kernel port's back is still found by name (the index cache).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from forwarder.kernel.netlink import NetlinkKernel
from forwarder.kernel.sysctl import reserve_ports
from forwarder.kernel.worker import NamespaceWorkers
from forwarder.wireguard import UserspaceBackend, generate_keypair
from forwarder.wireguard.inotify import InotifyBudget, instances_in_use, raise_limit
from forwarder.wireguard.uapi import SOCKET_DIR
from sdk.errors import ResourceExhausted
from sdk.netns import open_netns, socket_in

from .conftest import netns_path, run

pytestmark = pytest.mark.privileged


def _daemons_named(ifname: str) -> list[int]:
    """Pids of wireguard-go processes for ``ifname``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"wireguard-go" in argv[0] and ifname.encode() in argv:
            found.append(int(pid))
    return found


def daemons_in(path: str) -> list[int]:
    """Pids of wireguard-go processes living in the namespace at ``path``."""
    ino = os.stat(path).st_ino
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go"
                    and os.stat(f"/proc/{pid}/ns/net").st_ino == ino):
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[UserspaceBackend, Path]]:
    """A backend whose inotify limit is read from a file the test writes; it counts only its
    own daemons' instances (other tests on this machine start and stop theirs meanwhile)."""
    limit = tmp_path / "max_user_instances"
    limit.write_text("2\n")
    holder: list[UserspaceBackend] = []

    def count() -> int:
        backend = holder[0]
        return instances_in_use(pids=[p for n in backend.interfaces() if (p := backend.pid(n))])

    budget = InotifyBudget(limit=lambda: int(limit.read_text()), count=count, margin=0)
    backend = UserspaceBackend(budget=budget)
    holder.append(backend)
    try:
        yield backend, limit
    finally:
        await backend.close()


async def test_wireguard_go_past_the_inotify_limit_is_refused_before_it_runs(
    limited: tuple[UserspaceBackend, Path], netns: Callable[[str], str]
) -> None:
    backend, limit = limited
    underlay = netns_path(netns("ino"))
    names = [f"wgi{secrets.token_hex(4)}" for _ in range(3)]
    for name in names[:2]:
        await backend.create(name, underlay, generate_keypair()[0], 0)
    pids = [backend.pid(name) for name in names[:2]]
    assert instances_in_use(pids=[p for p in pids if p]) == 2  # one instance per daemon
    with pytest.raises(ResourceExhausted) as refused:
        await backend.create(names[2], underlay, generate_keypair()[0], 0)
    message = str(refused.value)
    assert "fs.inotify.max_user_instances=2" in message and "2 in use" in message
    assert "sysctl -w fs.inotify.max_user_instances=" in message
    assert _daemons_named(names[2]) == []  # never started, nothing to clean up
    assert not (SOCKET_DIR / f"{names[2]}.sock").exists()
    assert backend.interfaces() == sorted(names[:2])
    limit.write_text("3\n")  # room again: the same request now works
    await backend.create(names[2], underlay, generate_keypair()[0], 0)
    assert backend.interfaces() == sorted(names)


def test_raise_limit_raises_a_lower_limit_and_keeps_a_higher_one(tmp_path: Path) -> None:
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    assert raise_limit(8192, limit) == 8192
    assert limit.read_text().strip() == "8192"
    limit.write_text("65536\n")
    assert raise_limit(8192, limit) == 65536
    assert limit.read_text().strip() == "65536"


async def _port_zero_binds(path: str, count: int) -> list[int]:
    """Ports the kernel chooses for ``count`` UDP sockets bound to port 0 in ``path``."""
    socks = []
    try:
        for _ in range(count):
            sock = await socket_in(path, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            socks.append(sock)
            sock.bind(("0.0.0.0", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


async def test_tunnel_ports_are_never_chosen_for_port_zero(netns: Callable[[str], str]) -> None:
    name = netns("ports")
    path = netns_path(name)
    # An ephemeral range that overlaps the tunnel range, so that any port-0 bind could land in it.
    run("sysctl", "-qw", "net.ipv4.ip_local_port_range=51820 51899", netns=name)
    run("sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=8080", netns=name)
    tunnel = range(51820, 51850)
    assert await reserve_ports(path, tunnel) is True
    reserved = run("sysctl", "-n", "net.ipv4.ip_local_reserved_ports", netns=name).stdout
    assert reserved.strip() == "8080,51820-51849"  # what was there is kept
    assert await reserve_ports(path, range(51830, 51840)) is False  # already covered
    ports = await _port_zero_binds(path, 40)
    assert all(port >= 51850 for port in ports), ports
    backend = UserspaceBackend()
    ifname = f"wgr{secrets.token_hex(4)}"
    try:
        chosen = await backend.create(ifname, path, generate_keypair()[0], 0)
        assert chosen >= 51850
        assert await backend.create(f"wgs{secrets.token_hex(4)}", path, generate_keypair()[0],
                                    51820) == 51820  # a reserved port is still bound by number
    finally:
        await backend.close()
    # The kernel itself says these ports are still free for explicit binds after the daemons.
    assert "51820" not in run("ss", "-Huan", netns=name).stdout


async def test_a_busy_namespace_holds_up_neither_another_namespace_nor_the_loop(
    netns: Callable[[str], str],
) -> None:
    workers: NamespaceWorkers[None] = NamespaceWorkers(lambda: None, lambda _s: None)
    gate = threading.Event()
    fd_a, fd_b = (open_netns(netns_path(netns(r))) for r in ("busy", "free"))
    try:

        async def blocked(_state: None) -> str:
            await asyncio.to_thread(gate.wait, 30)  # like a kernel call that takes its time
            return "a"

        async def where(_state: None) -> int:
            return os.stat("/proc/thread-self/ns/net").st_ino

        first = asyncio.create_task(workers.run(fd_a, blocked))
        queued = asyncio.create_task(workers.run(fd_a, where))
        # Namespace b answers while a's worker is busy, from inside b; the loop keeps running.
        assert await asyncio.wait_for(workers.run(fd_b, where), 10) == os.fstat(fd_b).st_ino
        assert not first.done() and not queued.done()  # a's jobs run in order, one at a time
        gate.set()
        assert await asyncio.wait_for(first, 10) == "a"
        assert await asyncio.wait_for(queued, 10) == os.fstat(fd_a).st_ino
    finally:
        gate.set()
        workers.close()
        os.close(fd_a)
        os.close(fd_b)


async def test_an_idle_workload_namespace_worker_ends(netns: Callable[[str], str]) -> None:
    kernel = NetlinkKernel(idle=0.05)
    path = netns_path(netns("idle"))
    ino = os.stat(path).st_ino
    try:
        assert [link.name for link in await kernel.list_links(path)] == ["lo"]
        threads = [t for t in threading.enumerate() if t.name.endswith(f":{ino}")]
        assert len(threads) == 1 and kernel.workers() == 1
        await asyncio.to_thread(threads[0].join, 10)
        assert not threads[0].is_alive() and kernel.workers() == 0
        # A later call gets a new worker, as if nothing happened.
        assert (await kernel.get_link(path, "lo")).name == "lo"
    finally:
        kernel.close()


async def test_a_link_made_again_behind_the_ports_back_is_found_by_name(
    netns: Callable[[str], str],
) -> None:
    kernel = NetlinkKernel()
    name = netns("cache")
    path = netns_path(name)
    try:
        run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "p0", netns=name)
        await kernel.set_link(path, "d0", mtu=1400)  # its index is remembered now
        old = (await kernel.get_link(path, "d0")).index
        run("ip", "link", "del", "d0", netns=name)
        run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "p0", netns=name)
        await kernel.set_link(path, "d0", mtu=1300, up=True)
        link = await kernel.get_link(path, "d0")
        assert link.index != old and link.mtu == 1300 and link.up
        await kernel.set_link(path, "d0", new_name="d1")
        assert (await kernel.get_link(path, "d1")).index == link.index
        await kernel.delete_link(path, "d1")
        assert [link.name for link in await kernel.list_links(path)] == ["lo"]
    finally:
        kernel.close()


async def test_pooled_daemons_serve_vwires_of_their_mtu_and_leave_nothing(
    netns: Callable[[str], str],
) -> None:
    from forwarder.wireguard import WgPeer
    from forwarder.wireguard.pool import POOL_ALIAS

    kernel = NetlinkKernel()
    underlay = netns_path(netns("pool"))
    workload = netns_path(netns("pwl"))
    backend = UserspaceBackend(kernel=kernel, pool_size=2)
    first, second, third, fourth = (f"wgp{secrets.token_hex(4)}" for _ in range(4))
    sockets_before = set(SOCKET_DIR.glob("vwp*.sock"))
    try:
        # No pool yet: started on demand; the pool fills at this MTU behind it.
        await backend.create(first, underlay, generate_keypair()[0], 51830, mtu=1380)
        assert backend.pid(first) is not None
        assert not (await kernel.get_link(underlay, first)).alias  # not a pooled one
        await asyncio.wait_for(backend.pool.filled(underlay), 20)
        assert backend.pool.ready(underlay) == 2
        pooled = sorted(link.name for link in await kernel.list_links(underlay, POOL_ALIAS))
        assert len(pooled) == 2 and all(name.startswith("vwp") for name in pooled)
        assert all(link.mtu == 1380 for link in await kernel.list_links(underlay, POOL_ALIAS))
        # A vWire at that MTU takes a started daemon: its TUN is renamed, UAPI still works.
        port = await backend.create(second, underlay, generate_keypair()[0], 51831, mtu=1380)
        assert port == 51831
        link = await kernel.get_link(underlay, second)
        assert link.mtu == 1380 and link.kind == "tun"
        peer = WgPeer(public_key=generate_keypair()[1], endpoint=("192.0.2.9", 51820),
                      allowed_ips=("10.9.0.2/32",))
        await backend.set_peer(second, peer)
        assert [s.public_key for s in await backend.stats(second)] == [peer.public_key]
        await backend.move(second, underlay, workload)  # the daemon saw the MTU: no wait
        assert (await kernel.get_link(workload, second)).mtu == 1380
        # Another MTU: the pool has none, so a daemon is started for it; the pool follows.
        await backend.create(third, underlay, generate_keypair()[0], 51832, mtu=1400)
        assert not (await kernel.get_link(underlay, third)).alias
        await asyncio.wait_for(backend.pool.filled(underlay), 20)
        assert backend.pool.ready(underlay) == 2
        await backend.create(fourth, underlay, generate_keypair()[0], 51833, mtu=1400)
        taken = await kernel.get_link(underlay, fourth)
        assert taken.mtu == 1400 and (taken.alias or "").startswith(POOL_ALIAS)
        await asyncio.wait_for(backend.pool.filled(underlay), 20)
        assert len(daemons_in(underlay)) == 4 + 2  # four vWires' and two pooled
    finally:
        await backend.close()
        kernel.close()
    assert daemons_in(underlay) == []
    assert [link.name for link in await NetlinkKernel().list_links(underlay)] == ["lo"]
    assert set(SOCKET_DIR.glob("vwp*.sock")) <= sockets_before  # none of this test's left


async def test_a_gone_forwarders_pooled_tuns_are_removed(
    netns: Callable[[str], str], tmp_path: Path
) -> None:
    from forwarder.wireguard.pool import POOL_ALIAS, DevicePool

    dead_socket, live_socket = tmp_path / "vwpdead.sock", tmp_path / "vwplive.sock"
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(str(dead_socket))
    gone.close()  # the file stays, nobody answers: a daemon killed without cleaning up
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(live_socket))
    live.listen()

    name = netns("psweep")
    path = netns_path(name)
    kernel = NetlinkKernel()
    try:
        run("ip", "link", "add", "vwpdead", "type", "veth", "peer", "name", "xa", netns=name)
        run("ip", "link", "add", "vwpmine", "type", "veth", "peer", "name", "xb", netns=name)
        dead = max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 100000
        await kernel.set_link(path, "vwpdead", alias=f"{POOL_ALIAS}{dead}")
        await kernel.set_link(path, "vwpmine", alias=f"{POOL_ALIAS}{os.getpid()}")
        pool = DevicePool(1, kernel, lambda _n, _u: None,  # type: ignore[arg-type, return-value]
                          socket_dir=tmp_path)
        assert await pool.sweep(path) == ["vwpdead"]
        assert not dead_socket.exists() and live_socket.exists()
        # A live forwarder's pooled TUNs are never touched.
        assert sorted(link.name for link in await kernel.list_links(path)) == [
            "lo", "vwpmine", "xb"]
    finally:
        live.close()
        kernel.close()
