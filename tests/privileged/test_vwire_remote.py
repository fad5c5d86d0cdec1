"""Remote vWires on real namespaces with the real WireGuard backend (wireguard-go here).

Topology per test: two "node" namespaces joined by an underlay veth (10.99.0.1 <-> 10.99.0.2),
a client namespace on node A and an endpoint namespace on node B. The WireGuard interfaces keep
their UDP sockets in the node namespaces and live in the workload namespaces.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from forwarder.kernel import real_kernel
from forwarder.vwire import (
    Attachment,
    RemoteVWireSpec,
    RouteSpec,
    VWire,
    WireGuardPeerSpec,
    find_leftovers,
    program_remote,
    sweep,
)
from forwarder.wireguard import WireGuardBackend, detect_backend, generate_keypair
from sdk.errors import FabricError

from .conftest import netns_path, run
from .test_vwire_local import FailingKernel, kernel_state, ping

# Captures every frame on an interface until stdin closes (or 20 s), then prints a summary:
# frames, IPv4 protocols seen, whether the plaintext marker appeared anywhere.
_SNIFF = r"""
import json, select, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
frames, protos, marker = 0, set(), False
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    ready, _, _ = select.select([s, sys.stdin], [], [], 0.5)
    if sys.stdin in ready:
        break
    if s in ready:
        frame = s.recv(65535)
        frames += 1
        marker = marker or b"VWIRE-PLAINTEXT-MARKER" in frame
        if frame[12:14] == b"\x08\x00":
            protos.add(frame[14 + 9])
print(json.dumps({"frames": frames, "protos": sorted(protos), "marker": marker}))
"""


@dataclass
class Lab:
    node_a: str
    node_b: str
    client: str
    endpoint: str


@pytest.fixture
async def lab(netns: Callable[[str], str]) -> Lab:
    lab = Lab(netns("nodea"), netns("nodeb"), netns("cli"), netns("nse"))
    run("ip", "link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", lab.node_b,
        netns=lab.node_a)  # fmt: skip
    for ns, dev, cidr in ((lab.node_a, "ua", "10.99.0.1/24"), (lab.node_b, "ub", "10.99.0.2/24")):
        # IPv4-only underlay, settled before the test starts (no link-local churn in dumps).
        run("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", netns=ns)
        run("ip", "addr", "add", cidr, "dev", dev, netns=ns)
        run("ip", "link", "set", dev, "up", netns=ns)
    for ns, dev in ((lab.node_a, "ua"), (lab.node_b, "ub")):
        assert await wait_until(
            lambda ns=ns, dev=dev: (
                "state UP" in run("ip", "-o", "link", "show", dev, netns=ns).stdout
            )
        )
    return lab


@pytest.fixture
async def backend() -> AsyncIterator[WireGuardBackend]:
    wg = await detect_backend()
    try:
        yield wg
    finally:
        close = getattr(wg, "close", None)
        if close is not None:
            await close()


def remote_pair(
    lab: Lab, cid: str, port_a: int, port_b: int, client: str = "", endpoint: str = ""
) -> tuple[RemoteVWireSpec, RemoteVWireSpec]:
    """Specs of both sides of one connection (client side on node A, endpoint side on node B)."""
    priv_a, pub_a = generate_keypair()
    priv_b, pub_b = generate_keypair()
    client_addrs, endpoint_addrs = (
        ("172.16.0.1/32", "fd10::1/128"),
        ("172.16.0.2/32", "fd10::2/128"),
    )
    side_a = RemoteVWireSpec(
        connection_id=cid,
        workload=Attachment(
            netns_path(client or lab.client), "nsm0", client_addrs, (RouteSpec("172.20.0.0/16"),)
        ),
        peer=WireGuardPeerSpec(pub_b, ("10.99.0.2", port_b), endpoint_addrs),
        private_key=priv_a,
        underlay_ifname="ua",
        underlay_netns=netns_path(lab.node_a),
        listen_port=port_a,
    )
    side_b = RemoteVWireSpec(
        connection_id=cid,
        workload=Attachment(
            f"file://{netns_path(endpoint or lab.endpoint)}", "nse0", endpoint_addrs
        ),
        peer=WireGuardPeerSpec(pub_a, ("10.99.0.1", port_a), client_addrs),
        private_key=priv_b,
        underlay_ifname="ub",
        underlay_netns=netns_path(lab.node_b),
        listen_port=port_b,
    )
    return side_a, side_b


async def connect(backend: WireGuardBackend, specs: tuple[RemoteVWireSpec, ...]) -> list[VWire]:
    kernel = real_kernel()
    done: list[VWire] = []
    try:
        for spec in specs:
            done.append(await program_remote(kernel, backend, spec))
    except BaseException:
        for vwire in done:
            await vwire.close()
        raise
    return done


def wg_processes(names: set[str]) -> set[str]:
    """Which of the given WireGuard names still have a wireguard-go process."""
    out = run("ps", "-eo", "args", check=False).stdout.splitlines()
    return {name for name in names for line in out if "wireguard-go" in line and name in line}


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def capture(ns: str, dev: str, traffic: Callable[[], None]) -> dict[str, Any]:
    """Run ``traffic`` while capturing every frame on ``dev`` in ``ns``; return the summary."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", _SNIFF, dev]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as sniffer:
        assert sniffer.stdout is not None and sniffer.stdin is not None
        assert sniffer.stdout.readline().strip() == "ready"
        traffic()
        sniffer.stdin.close()
        summary: dict[str, Any] = json.loads(sniffer.stdout.readline())
    return summary


def pings(lab: Lab) -> None:
    assert ping(lab.client, "172.16.0.2") == "ok"
    assert ping(lab.client, "fd10::2") == "ok"
    assert ping(lab.endpoint, "172.16.0.1") == "ok"
    assert ping(lab.client, "172.16.0.2", 1400) == "ok"
    assert ping(lab.client, "172.16.0.2", 1500) == "EMSGSIZE"


async def test_remote_vwire_ping_mtu_and_only_udp_on_the_underlay(
    lab: Lab, backend: WireGuardBackend
) -> None:
    sides = await connect(backend, remote_pair(lab, "conn-r1", 51820, 51821))
    try:
        assert [s.mtu for s in sides] == [1440, 1440]
        assert "mtu 1440" in run("ip", "link", "show", "nsm0", netns=lab.client).stdout
        summary = capture(lab.node_b, "ub", lambda: pings(lab))
        assert summary["frames"] > 0
        assert summary["protos"] == [17]  # only UDP, no ICMP in the clear
        assert summary["marker"] is False
        metrics = await sides[0].metrics()
        assert int(metrics["wireguard_last_handshake_age_seconds"]) < 60
        assert int(metrics["workload_tx_packets"]) > 0
        # The node namespaces hold only the underlay; the tunnels live with the workloads.
        assert "nsm0" not in run("ip", "link", netns=lab.node_a).stdout
    finally:
        for side in sides:
            await side.close()


async def test_overlapping_remote_connections_both_work(
    lab: Lab, backend: WireGuardBackend, netns: Callable[[str], str]
) -> None:
    client2, endpoint2 = netns("cli"), netns("nse")
    first = remote_pair(lab, "conn-o1", 51820, 51821)
    second = remote_pair(lab, "conn-o2", 51822, 51823, client2, endpoint2)
    sides = await connect(backend, first + second)
    try:
        assert ping(lab.client, "172.16.0.2") == "ok"
        assert ping(client2, "172.16.0.2") == "ok"
        assert ping(client2, "fd10::2") == "ok"
    finally:
        for side in sides:
            await side.close()


async def test_remote_close_removes_everything(lab: Lab, backend: WireGuardBackend) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    sides = await connect(backend, remote_pair(lab, "conn-rc", 51820, 51821))
    wg_names = {side.ends[0].ifname for side in sides}  # renamed: nsm0/nse0
    leftovers = await find_leftovers(real_kernel(), [netns_path(n) for n in names])
    daemons = {x.wg_name for x in leftovers if x.wg_name}
    assert len(daemons) == 2 and wg_processes(daemons) == daemons
    for side in sides:
        await side.close()
        await side.close()
    assert kernel_state(*names) == before
    assert await wait_until(lambda: not wg_processes(daemons))
    assert wg_names == {"nsm0", "nse0"}


@pytest.mark.parametrize(("method", "nth"), [("set_link", 1), ("add_route", 2)])
async def test_remote_failure_mid_programming_leaves_nothing(
    lab: Lab, backend: WireGuardBackend, method: str, nth: int
) -> None:
    names = (lab.node_a, lab.client)
    before = kernel_state(*names)
    side_a, _ = remote_pair(lab, "conn-rf", 51820, 51821)
    failing = FailingKernel(real_kernel(), method, nth)
    with pytest.raises(FabricError, match="injected"):
        await program_remote(failing, backend, side_a)  # type: ignore[arg-type]
    assert kernel_state(*names) == before
    assert not await find_leftovers(real_kernel(), [netns_path(n) for n in names])


async def test_sweep_removes_remote_leftovers(lab: Lab, backend: WireGuardBackend) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    scope = [netns_path(n) for n in names]
    before = kernel_state(*names)
    await connect(backend, remote_pair(lab, "conn-rs", 51820, 51821))  # handles lost
    daemons = {x.wg_name for x in await find_leftovers(real_kernel(), scope) if x.wg_name}
    removed = await sweep(real_kernel(), backend, namespaces=scope)
    assert {x.connection_id for x in removed} == {"conn-rs"}
    assert kernel_state(*names) == before
    assert await wait_until(lambda: not wg_processes(daemons))
