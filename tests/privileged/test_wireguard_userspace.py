"""wireguard-go backend against real wireguard-go processes in real namespaces.

Topology per test: two underlay namespaces joined by a veth pair (IPv4 192.0.2.0/24 and IPv6
fd00:0:1::/64), one WireGuard interface in each, configured only through the backend. Traffic is
ICMP echo sent from inside the namespaces the test made.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from forwarder.wireguard import (
    UserspaceBackend,
    WgPeer,
    WgProcessEvent,
    generate_keypair,
)
from forwarder.wireguard.uapi import SOCKET_DIR
from sdk.errors import AlreadyExists, NotFound
from tests.privileged.conftest import netns_path, run

pytestmark = pytest.mark.privileged

# A bounded ping: echo requests every 0.2 s until one reply or the deadline (exit 3).
PING = r"""
import socket, struct, sys, time
dst, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
v6 = ":" in dst
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
if v6:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    req = struct.pack("!BBHHH", 128, 0, 0, 7, 1) + b"vwire"
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    req = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"vwire"
    req = req[:2] + struct.pack("!H", csum(req)) + req[4:]
s.settimeout(0.2)
while time.monotonic() < deadline:
    try:
        s.sendto(req, (dst, 0))
    except OSError:  # no route (yet): counts as no reply
        time.sleep(0.2)
        continue
    try:
        data, addr = s.recvfrom(2048)
    except TimeoutError:
        continue
    icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
    if addr[0] == dst and icmp[0] == (129 if v6 else 0):
        sys.exit(0)
sys.exit(3)
"""


def in_ns(netns: str | None, *cmd: str) -> list[str]:
    """Argv running ``cmd`` in ``netns`` with a plain setns (nsenter), no mount namespace."""
    return ["nsenter", f"--net={netns_path(netns)}", "--", *cmd] if netns else list(cmd)


async def ping(netns: str, dst: str, within: float = 5.0) -> bool:
    """True on an echo reply within ``within`` seconds, False on none; any other failure raises."""
    argv = in_ns(netns, sys.executable, "-c", PING, dst, str(within))
    proc = await asyncio.to_thread(run, *argv, check=False)
    assert proc.returncode in (0, 3), f"ping helper failed ({proc.returncode}): {proc.stderr}"
    return proc.returncode == 0


async def sh(*cmd: str, netns: str | None = None) -> str:
    return (await asyncio.to_thread(run, *in_ns(netns, *cmd))).stdout


def wg_name() -> str:
    return f"wgt{secrets.token_hex(4)}"


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Events:
    """The process events of a backend, in order, and whether one of ``kind`` came."""

    def __init__(self, backend: UserspaceBackend, kind: str) -> None:
        self.seen: list[WgProcessEvent] = []
        self.came = asyncio.Event()
        self.kind = kind
        backend.subscribe(self._on_event)

    def _on_event(self, event: WgProcessEvent) -> None:
        self.seen.append(event)
        if event.kind == self.kind:
            self.came.set()

    def kinds(self) -> list[str]:
        return [event.kind for event in self.seen]

    async def wait(self, seconds: float) -> None:
        await asyncio.wait_for(self.came.wait(), seconds)


@dataclass
class Side:
    ns: str
    ifname: str
    private: str
    public: str
    port: int
    underlay4: str
    underlay6: str
    overlay4: str
    overlay6: str


@pytest.fixture
async def backend() -> AsyncIterator[UserspaceBackend]:
    be = UserspaceBackend()
    try:
        yield be
    finally:
        pids = [be.pid(name) for name in be.interfaces()]
        names = be.interfaces()
        await be.close()
        for pid in pids:
            assert pid is None or not process_alive(pid)
        for name in names:
            assert not (SOCKET_DIR / f"{name}.sock").exists()


@pytest.fixture
def underlay(netns: Callable[[str], str]) -> tuple[str, str]:
    """Two namespaces joined by a veth pair with IPv4 and IPv6 addresses."""
    a, b = netns("ua"), netns("ub")
    va, vb = f"v{secrets.token_hex(3)}", f"v{secrets.token_hex(3)}"
    run("ip", "link", "add", va, "netns", a, "type", "veth", "peer", vb, "netns", b)
    for ns, dev, last in ((a, va, 1), (b, vb, 2)):
        run(*in_ns(ns, "ip", "addr", "add", f"192.0.2.{last}/24", "dev", dev))
        run(*in_ns(ns, "ip", "addr", "add", f"fd00:0:1::{last}/64", "dev", dev, "nodad"))
        run(*in_ns(ns, "ip", "link", "set", dev, "up"))
    return a, b


async def make_side(be: UserspaceBackend, ns: str, n: int) -> Side:
    private, public = generate_keypair()
    ifname = wg_name()
    port = await be.create(ifname, netns_path(ns), private, 0)
    return Side(
        ns, ifname, private, public, port, f"192.0.2.{n}", f"fd00:0:1::{n}",
        f"10.77.0.{n}", f"fd77::{n}",
    )  # fmt: skip


async def bring_up(side: Side, ns: str | None = None) -> None:
    where = ns or side.ns
    await sh("ip", "addr", "add", f"{side.overlay4}/24", "dev", side.ifname, netns=where)
    await sh("ip", "addr", "add", f"{side.overlay6}/64", "dev", side.ifname, "nodad", netns=where)
    await sh("ip", "link", "set", side.ifname, "up", netns=where)


def peer_of(side: Side, *, v6_underlay: bool = False, endpoint: bool = True) -> WgPeer:
    host = side.underlay6 if v6_underlay else side.underlay4
    return WgPeer(
        public_key=side.public,
        endpoint=(host, side.port) if endpoint else None,
        allowed_ips=(f"{side.overlay4}/32", f"{side.overlay6}/128"),
    )


async def peer_and_bring_up(be: UserspaceBackend, a: Side, b: Side, a_ns: str) -> None:
    """Each side the other's peer, both up (``a`` in ``a_ns``)."""
    await be.set_peer(a.ifname, peer_of(b))
    await be.set_peer(b.ifname, peer_of(a))
    await bring_up(a, a_ns)
    await bring_up(b)


async def works_from(be: UserspaceBackend, overlay: str, a: Side, b: Side) -> None:
    """``a``'s interface is in ``overlay``, its UDP socket in its underlay only; peered with
    ``b`` and up, echo passes both ways and nothing from the overlay reaches the underlay (so
    traffic really goes through the tunnel), after a handshake."""
    assert f":{a.port} " in await sh("ss", "-Hulpn", netns=a.ns)
    assert f":{a.port} " not in await sh("ss", "-Hulpn", netns=overlay)
    await peer_and_bring_up(be, a, b, overlay)
    assert await ping(overlay, b.overlay4)
    assert await ping(overlay, b.overlay6)
    assert await ping(b.ns, a.overlay4)
    assert not await ping(overlay, b.underlay4, within=0.5)
    [stats] = await be.stats(a.ifname)
    assert stats.last_handshake is not None and stats.rx_bytes > 0


async def killed_and_restarted(be: UserspaceBackend, ifname: str) -> Events:
    """SIGKILL the daemon of ``ifname`` and wait until it was restarted; its events."""
    events = Events(be, "restarted")
    pid = be.pid(ifname)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await events.wait(10)
    assert events.kinds() == ["exited", "restarted"]
    return events


async def tunnel(
    be: UserspaceBackend, underlay: tuple[str, str], *, v6_underlay: bool = False
) -> tuple[Side, Side]:
    a = await make_side(be, underlay[0], 1)
    b = await make_side(be, underlay[1], 2)
    await be.set_peer(a.ifname, peer_of(b, v6_underlay=v6_underlay))
    await be.set_peer(b.ifname, peer_of(a, endpoint=False))
    await bring_up(a)
    await bring_up(b)
    return a, b


async def test_create_reports_port_leaves_link_down_and_socket_in_underlay(
    backend: UserspaceBackend, underlay: tuple[str, str]
) -> None:
    private, _ = generate_keypair()
    ifname = wg_name()
    started = time.monotonic()
    port = await backend.create(ifname, netns_path(underlay[0]), private, 0)
    print(f"create() with socket wait took {(time.monotonic() - started) * 1000:.1f} ms")
    assert 0 < port < 65536
    link = await sh("ip", "-o", "link", "show", ifname, netns=underlay[0])
    assert "state DOWN" in link and "inet" not in link
    assert f":{port} " in await sh("ss", "-Hulpn", netns=underlay[0])
    assert f"listening port: {port}" in await sh("wg", "show", ifname)
    fixed = wg_name()
    assert (
        await backend.create(fixed, netns_path(underlay[1]), generate_keypair()[0], 51999) == 51999
    )


async def test_ipv4_and_ipv6_overlay_with_stats(
    backend: UserspaceBackend, underlay: tuple[str, str]
) -> None:
    a, b = await tunnel(backend, underlay)
    assert await ping(a.ns, b.overlay4)
    assert await ping(a.ns, b.overlay6)
    assert await ping(b.ns, a.overlay4)
    [stats] = await backend.stats(a.ifname)
    assert stats.public_key == b.public
    assert stats.last_handshake is not None and abs(stats.last_handshake - time.time()) < 60
    assert stats.rx_bytes > 0 and stats.tx_bytes > 0
    # The responder learned A's endpoint from the handshake.
    assert f"endpoint: {a.underlay4}:{a.port}" in await sh("wg", "show", b.ifname)


async def test_ipv6_underlay_endpoint(backend: UserspaceBackend, underlay: tuple[str, str]) -> None:
    a, b = await tunnel(backend, underlay, v6_underlay=True)
    assert f"endpoint: [{b.underlay6}]:{b.port}" in await sh("wg", "show", a.ifname)
    assert await ping(a.ns, b.overlay4)
    assert await ping(a.ns, b.overlay6)


async def test_set_peer_updates_in_place_and_remove_peer(
    backend: UserspaceBackend, underlay: tuple[str, str]
) -> None:
    a, b = await tunnel(backend, underlay)
    _, other = generate_keypair()
    await backend.set_peer(a.ifname, WgPeer(other, None, ("10.88.0.0/24",), keepalive=25))
    narrowed = WgPeer(b.public, (b.underlay4, b.port), (f"{b.overlay4}/32",), keepalive=5)
    await backend.set_peer(a.ifname, narrowed)
    shown = await sh("wg", "show", a.ifname, "allowed-ips")
    assert f"{b.public}\t{b.overlay4}/32\n" in shown  # IPv6 allowed IP replaced away
    assert f"{other}\t10.88.0.0/24" in shown
    assert f"{b.public}\t5" in await sh("wg", "show", a.ifname, "persistent-keepalive")
    await backend.remove_peer(a.ifname, other)
    await backend.remove_peer(a.ifname, other)  # absent peer: not an error
    assert [s.public_key for s in await backend.stats(a.ifname)] == [b.public]
    await backend.remove_peer(a.ifname, b.public)
    assert await backend.stats(a.ifname) == []
    assert not await ping(a.ns, b.overlay4, within=1.0)


async def test_delete_leaves_no_process_socket_or_link(
    backend: UserspaceBackend, underlay: tuple[str, str]
) -> None:
    a, _ = await tunnel(backend, underlay)
    pid = backend.pid(a.ifname)
    assert pid is not None and process_alive(pid)
    await backend.delete(a.ifname)
    assert not process_alive(pid)
    assert not (SOCKET_DIR / f"{a.ifname}.sock").exists()
    assert a.ifname not in await sh("ip", "-o", "link", netns=a.ns)
    await backend.delete(a.ifname)  # idempotent
    with pytest.raises(NotFound):
        await backend.stats(a.ifname)


async def test_name_clash_is_refused_and_leaves_nothing(
    backend: UserspaceBackend, underlay: tuple[str, str]
) -> None:
    a = await make_side(backend, underlay[0], 1)
    other = UserspaceBackend()  # e.g. a second forwarder on the same host
    with pytest.raises(AlreadyExists):
        await other.create(a.ifname, netns_path(underlay[1]), generate_keypair()[0], 0)
    assert other.interfaces() == []
    with pytest.raises(AlreadyExists):
        await backend.create(a.ifname, netns_path(underlay[1]), generate_keypair()[0], 0)
    with pytest.raises(NotFound):
        await backend.create(wg_name(), "/var/run/netns/vwt-missing", generate_keypair()[0], 0)
    # Two concurrent creates of one name: exactly one wins, the loser leaves nothing behind.
    name = wg_name()
    results = await asyncio.gather(
        *(backend.create(name, netns_path(ns), generate_keypair()[0], 0) for ns in underlay),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "int"]
    assert backend.interfaces() == sorted([a.ifname, name])


async def test_sigkill_is_reported_restarted_and_reconfigured(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str]
) -> None:
    a, b = await tunnel(backend, underlay)
    overlay = netns("ov")
    await backend.move(a.ifname, netns_path(a.ns), netns_path(overlay))
    await bring_up(a, overlay)
    assert await ping(overlay, b.overlay4)
    old_pid = backend.pid(a.ifname)
    events = await killed_and_restarted(backend, a.ifname)
    assert events.seen[0].returncode == -signal.SIGKILL
    new_pid = backend.pid(a.ifname)
    assert new_pid is not None and new_pid != old_pid and process_alive(new_pid)
    # Same key, same port, same peers; the new TUN is back in the overlay namespace, DOWN.
    shown = await sh("wg", "show", a.ifname)
    assert f"listening port: {a.port}" in shown and f"peer: {b.public}" in shown
    assert a.ifname in await sh("ip", "-o", "link", "show", a.ifname, netns=overlay)
    await bring_up(a, overlay)  # the subscriber's job: addresses and link state
    assert await ping(overlay, b.overlay4)
    assert await ping(b.ns, a.overlay6)


async def test_sigkill_without_restart_possible_is_reported_and_socket_removed(
    underlay: tuple[str, str], netns: Callable[[str], str]
) -> None:
    from forwarder.wireguard import RestartPolicy

    be = UserspaceBackend(restart=RestartPolicy(max_attempts=2, backoff=0.05))
    doomed = netns("doom")
    ifname = wg_name()
    sock = SOCKET_DIR / f"{ifname}.sock"
    events = Events(be, "restart_failed")
    try:
        await be.create(ifname, netns_path(doomed), generate_keypair()[0], 0)
        pid = be.pid(ifname)
        assert pid is not None
        await sh("ip", "netns", "del", doomed)  # the underlay vanishes: no restart possible
        os.kill(pid, signal.SIGKILL)
        await events.wait(10)
        assert events.kinds() == ["exited", "restart_failed"]
        assert "does not exist" in events.seen[-1].detail
        assert not sock.exists()  # the stale socket SIGKILL left was unlinked
    finally:
        await be.close()
    assert be.interfaces() == [] and not sock.exists()


async def test_namespace_trick_move_keeps_traffic_flowing(
    backend: UserspaceBackend, underlay: tuple[str, str], netns: Callable[[str], str]
) -> None:
    a = await make_side(backend, underlay[0], 1)
    b = await make_side(backend, underlay[1], 2)
    overlay = netns("ov")
    await backend.move(a.ifname, netns_path(a.ns), netns_path(overlay))
    await backend.move(a.ifname, netns_path(a.ns), netns_path(overlay))  # idempotent
    assert a.ifname not in await sh("ip", "-o", "link", netns=a.ns)
    assert "state DOWN" in await sh("ip", "-o", "link", "show", a.ifname, netns=overlay)
    await works_from(backend, overlay, a, b)  # the UDP socket stayed in the underlay
    # Link down/up in the overlay: wireguard-go only sees it through its 1 s write() probe
    # (its netlink listener stayed in the underlay), and still rebinds the same underlay port.
    await sh("ip", "link", "set", a.ifname, "down", netns=overlay)
    assert not await ping(overlay, b.overlay4, within=0.3)
    await sh("ip", "link", "set", a.ifname, "up", netns=overlay)
    assert await ping(overlay, b.overlay4)
    assert f":{a.port} " in await sh("ss", "-Hulpn", netns=a.ns)
    with pytest.raises(NotFound):
        await backend.move(a.ifname, None, "/var/run/netns/vwt-missing")


def test_no_leftover_sockets_of_this_module() -> None:
    leftovers = [p.name for p in Path(SOCKET_DIR).glob("wgt*.sock")] if SOCKET_DIR.exists() else []
    assert leftovers == []


async def test_allowed_ips_added_to_a_peer_stay_with_it_after_a_restart(
    backend: UserspaceBackend, underlay: tuple[str, str]
) -> None:
    """A shared device's joins add allowed IPs without rewriting the peer's list; a daemon
    restarted by the supervisor gets the whole list again."""
    a, b = await tunnel(backend, underlay)
    before = await sh("wg", "show", a.ifname, "allowed-ips")
    kept = ("endpoints", "persistent-keepalive")
    others = [await sh("wg", "show", a.ifname, what) for what in kept]
    await backend.add_allowed_ips(a.ifname, b.public, ("10.89.0.0/24", "fd00:89::/64"))
    shown = await sh("wg", "show", a.ifname, "allowed-ips")
    for prefix in (*before.split("\t", 1)[1].split(), "10.89.0.0/24", "fd00:89::/64"):
        assert prefix in shown, shown
    assert [await sh("wg", "show", a.ifname, what) for what in kept] == others
    _, stranger = generate_keypair()
    await backend.add_allowed_ips(a.ifname, stranger, ("10.90.0.0/24",))  # not made
    assert stranger not in await sh("wg", "show", a.ifname, "peers")
    restarted = asyncio.Event()
    backend.subscribe(lambda e: restarted.set() if e.kind == "restarted" else None)
    pid = backend.pid(a.ifname)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(restarted.wait(), 10)
    assert await sh("wg", "show", a.ifname, "allowed-ips") == shown
