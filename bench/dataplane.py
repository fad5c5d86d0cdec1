"""Data-plane benchmark: vWire throughput and setup time against hand-made peers, in one run.

Run (root): ``python -m bench.dataplane [--json] [--seconds N] [--rounds R] [--connections C]
[--aggregate N]``.

Topology (namespaces ``vwd<pid>-...``, removed at the end whatever happens): two node namespaces
``n1``/``n2`` joined by an underlay veth (10.99.0.1 <-> 10.99.0.2, MTU 1500) and by a second,
jumbo one (10.98.0.1 <-> 10.98.0.2, MTU 9001: an intra-cloud path in AWS), a client namespace
``c1`` on node 1 and an endpoint namespace ``e2`` on node 2 for remote vWires, a client
``lc`` and endpoint ``le`` on node 1 for the local vWire, and ``--aggregate`` pairs of a client
``ac<i>`` on node 1 and an endpoint ``ae<i>`` on node 2 for the aggregate rows.

Rows (single-stream ``iperf3 -J`` for ``--seconds``; the server is ``iperf3 -s -1`` on the
receiving side):

- ``veth``: raw veth between the two node namespaces (the underlay itself);
- ``wireguard_go``: a tunnel n1 <-> n2 made by hand the way a person would: ``wireguard-go -f``,
  ``wg set`` (key, port, peer, endpoint, allowed IPs), ``ip addr``, ``ip link set up``, leaving
  wireguard-go's default MTU (1420);
- ``wireguard_go_same_mtu``: the same hand-made tunnel with the MTU the fabric computes
  (underlay 1500 - 60 = 1440), so the comparison with the fabric differs in nothing but the
  fabric;
- ``remote_vwire``: the fabric's remote vWire c1 <-> e2: :func:`program_remote` on both sides
  (namespace trick) through :func:`real_kernel` and :func:`detect_backend`;
- ``remote_vwire_jumbo``: the same remote vWire over the jumbo underlay (path MTU 9001, vWire
  MTU 8941, interfaces ``nsm1``/``nse1`` in the same namespaces);
- ``local_vwire``: the fabric's local vWire lc <-> le (:func:`program_local`);
- ``remote_vwire_shared``: a remote vWire c1 <-> e2 over shared devices (:func:`program_shared`
  on both sides, ``nsm2``/``nse2``): each node has its own :class:`SharedDevices` (its own
  namespace, node key and port range), the endpoint side chooses the address space and learns
  the client side's port from the handshake, the client side dials the endpoint side's device
  port in that space, as two forwarders in shared mode do;
- ``remote_vwire_aggregate``: ``--aggregate`` remote vWires ac<i> <-> ae<i> (a device pair per
  vWire), ``iperf3`` on all of them at once for the same ``--seconds``, summed;
- ``remote_vwire_shared_aggregate``: as many connections between the same namespaces over the
  one shared device pair of the two nodes, at once, summed;
- ``kernel_wireguard``: an optional peer, skipped with a note when the host lacks the kernel
  module.

Every row is measured ``--rounds`` times, interleaved, and its best round is kept (tunnels are
CPU-bound on two cores, so the best round is the least disturbed one). Ratios:
``remote_vs_wireguard_go`` (goal >= 0.95; the same-MTU hand tunnel is the reference, see
``remote_vs_wireguard_go_default_mtu`` for the default-MTU one), ``local_vs_veth``
(goal >= 0.90), ``jumbo_vs_1500_path`` (``remote_vwire_jumbo`` / ``remote_vwire``: what the
per-path MTU buys on an intra-cloud jumbo path; goal >= 2.2, hand-made wireguard-go measured
1.95 vs 0.85 Gbit/s here), ``shared_vs_per_vwire`` (``remote_vwire_shared`` /
``remote_vwire``) and ``shared_vs_per_vwire_aggregate`` (the two aggregate rows: over shared
devices all of a node pair's connections go through one daemon per side). Setup time:
``--connections`` remote vWires (both sides programmed, one after the other, as the two
forwarders do) and as many local ones, p50/p99, each closed before the next. Every loop is
bounded by its count and by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Deadline,
    Metric,
    ms,
    percentile,
    progress,
    report,
    require_root,
    start_wireguard_go,
)
from forwarder.kernel import KernelPort, real_kernel
from forwarder.kernel.wireguard import kernel_wireguard_available
from forwarder.ports import PortPool
from forwarder.shared import SharedDevices, SharedPeerSpec, SharedVWireSpec, program_shared
from forwarder.vwire import (
    Attachment,
    LocalVWireSpec,
    RemoteVWireSpec,
    VWire,
    WireGuardPeerSpec,
    program_local,
    program_remote,
)
from forwarder.wireguard import WireGuardBackend, detect_backend, generate_keypair
from sdk import log

PREFIX = "vwd"
NETNS_DIR = Path("/var/run/netns")
UNDERLAY = {"n1": ("ua", "10.99.0.1"), "n2": ("ub", "10.99.0.2")}
JUMBO_UNDERLAY = {"n1": ("ja", "10.98.0.1"), "n2": ("jb", "10.98.0.2")}
JUMBO_MTU = 9001
JUMBO_ADDRS = ("172.18.0.1", "172.18.0.2")
JUMBO_PORTS = (51822, 51823)
HAND_TUNNEL = ("10.77.0.1", "10.77.0.2")
REMOTE_ADDRS = ("172.16.0.1", "172.16.0.2")
LOCAL_ADDRS = ("172.17.0.1", "172.17.0.2")
HAND_PORTS = (41820, 41821)
FABRIC_PORTS = (51820, 51821)
SETUP_PORT_BASE = 52000
AGGREGATE_PORT_BASE = 51900  # two per aggregate vWire: below SETUP_PORT_BASE for MAX_AGGREGATE
MAX_AGGREGATE = 16
SHARED_ADDRS = ("172.19.0.1", "172.19.0.2")
SHARED_IFNAMES = ("nsm2", "nse2")
#: each node's shared devices take their ports from a range of their own
SHARED_PORTS = {"n1": range(51840, 51845), "n2": range(51845, 51850)}
SHARED_KEEPALIVE = 25  # the dialling side's, as the forwarder sets it (first handshake at once)
WG_OVERHEAD_IPV4 = 60
REMOTE_GOAL, LOCAL_GOAL, JUMBO_GOAL = 0.95, 0.90, 2.2
AGGREGATE_ROWS = ("remote_vwire_aggregate", "remote_vwire_shared_aggregate")


@dataclass
class Config:
    seconds: float = 4.0
    rounds: int = 3
    connections: int = 50
    max_seconds: float = 300.0
    aggregate: int = 4  # connections at once in the aggregate rows; 0: no aggregate rows


@dataclass
class Results:
    rounds: dict[str, list[float]] = field(default_factory=dict)  # row -> Gbit/s per round
    skipped: dict[str, str] = field(default_factory=dict)  # row -> why
    mtus: dict[str, int] = field(default_factory=dict)
    remote_setup: list[float] = field(default_factory=list)
    local_setup: list[float] = field(default_factory=list)
    backend: str = ""

    def best(self, row: str) -> float:
        return max(self.rounds[row])


# ---- processes and namespaces -------------------------------------------------------------


NAME = "bench.dataplane"


async def sh(*cmd: str, netns: str | None = None, timeout: float = 30.0, stdin: bytes = b"") -> str:
    """Run a command (in ``netns`` when given) to completion; its stdout, or RuntimeError."""
    argv = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        await kill(proc)
        raise RuntimeError(f"`{' '.join(argv)}` took longer than {timeout} s") from None
    except asyncio.CancelledError:  # e.g. a sibling iperf3 of an aggregate row failed
        await kill(proc)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


async def kill(proc: asyncio.subprocess.Process, grace: float = 3.0) -> None:
    """Stop ``proc``'s process group: SIGTERM, SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()


@dataclass(frozen=True)
class Topo:
    """Namespace names by role (n1, n2, c1, e2, lc, le)."""

    names: dict[str, str]

    def __getitem__(self, role: str) -> str:
        return self.names[role]

    def path(self, role: str) -> str:
        return str(NETNS_DIR / self.names[role])


def remove_stale_namespaces() -> None:
    """Delete ``vwd<pid>-*`` namespaces of earlier runs whose process is gone."""
    for entry in NETNS_DIR.glob(f"{PREFIX}*-*") if NETNS_DIR.exists() else ():
        pid = entry.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", entry.name], capture_output=True, timeout=30)


def roles(aggregate: int) -> list[str]:
    """The namespaces' roles: the fixed ones, then ``ac<i>``/``ae<i>`` per aggregate pair."""
    pairs = [role for i in range(aggregate) for role in (f"ac{i}", f"ae{i}")]
    return ["n1", "n2", "c1", "e2", "lc", "le", *pairs]


async def build(aggregate: int = 0, prefix: str = PREFIX) -> Topo:
    """Create the namespaces and the underlay (see module docstring); on failure delete what
    was made and re-raise."""
    topo = Topo({role: f"{prefix}{os.getpid()}-{role}" for role in roles(aggregate)})
    try:
        await _build(topo)
    except BaseException:
        await teardown(topo)
        raise
    return topo


async def _build(topo: Topo) -> None:
    for name in topo.names.values():
        await sh("ip", "netns", "add", name)
        await sh("ip", "-n", name, "link", "set", "lo", "up")
    for underlay, mtu in ((UNDERLAY, 1500), (JUMBO_UNDERLAY, JUMBO_MTU)):
        a, b = underlay["n1"][0], underlay["n2"][0]
        await sh("ip", "-n", topo["n1"], "link", "add", a, "mtu", str(mtu), "type", "veth",
                 "peer", "name", b, "netns", topo["n2"], "mtu", str(mtu))
        for role, (dev, ip) in underlay.items():
            await sh("ip", "netns", "exec", topo[role], "sysctl", "-qw",
                     f"net.ipv6.conf.{dev}.disable_ipv6=1")
            await sh("ip", "-n", topo[role], "addr", "add", f"{ip}/24", "dev", dev)
            await sh("ip", "-n", topo[role], "link", "set", dev, "up")


async def teardown(topo: Topo) -> None:
    """Delete every namespace of ``topo`` (errors ignored: best effort, all of them; one that
    was never made is no error)."""
    for name in topo.names.values():
        if (NETNS_DIR / name).exists():
            with contextlib.suppress(RuntimeError):
                await sh("ip", "netns", "del", name)


# ---- iperf3 ---------------------------------------------------------------------------------


async def iperf(server_ns: str, client_ns: str, address: str, seconds: float) -> float:
    """Single-stream TCP throughput client -> server (Gbit/s, as received)."""
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", address, "--forceflush",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        async with asyncio.timeout(5):
            while b"listening" not in (line := await server.stdout.readline()):
                if not line:
                    raise RuntimeError(f"iperf3 server on {address} exited before listening")
        out = await sh("iperf3", "-c", address, "-t", f"{seconds:g}", "-J", netns=client_ns,
                       timeout=seconds + 20)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait()
    finally:
        await kill(server)
    result: dict[str, Any] = json.loads(out)
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


async def iperf_all(topo: Topo, wires: Sequence[Wire], seconds: float) -> float:
    """``iperf3`` client -> endpoint on every wire at once, for the same ``seconds``: the sum
    (Gbit/s). One failing stops the others (their processes killed) and re-raises."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(iperf(topo[w.endpoint], topo[w.client], w.addrs[1], seconds))
                 for w in wires]
    return sum(task.result() for task in tasks)


# ---- peers made by hand ----------------------------------------------------------------------


class HandTunnel:
    """A WireGuard tunnel n1 <-> n2 configured by hand with ``wg`` and ``ip``.

    ``kind`` is ``wireguard-go`` (a daemon per side, ``wireguard-go -f``) or ``kernel``
    (``ip link add ... type wireguard``). ``mtu`` None leaves the default (1420).
    """

    def __init__(self, topo: Topo, kind: str, mtu: int | None, keydir: Path) -> None:
        self.topo, self.kind, self.mtu, self.keydir = topo, kind, mtu, keydir
        tag = f"{os.getpid() % 100000}"
        self.ifnames = (f"wgh{tag}a", f"wgh{tag}b")
        self.daemons: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        keys = [generate_keypair(), generate_keypair()]
        for i, role in enumerate(("n1", "n2")):
            ns, ifname = self.topo[role], self.ifnames[i]
            if self.kind == "kernel":
                await sh("ip", "-n", ns, "link", "add", ifname, "type", "wireguard")
            else:
                self.daemons.append(await start_wireguard_go(ns, ifname, every=0.005))
            keyfile = self.keydir / f"{ifname}.key"
            keyfile.write_text(keys[i][0])
            other = 1 - i
            peer_ip = UNDERLAY["n2" if i == 0 else "n1"][1]
            await sh("wg", "set", ifname, "listen-port", str(HAND_PORTS[i]),
                     "private-key", str(keyfile), "peer", keys[other][1],
                     "endpoint", f"{peer_ip}:{HAND_PORTS[other]}",
                     "allowed-ips", f"{HAND_TUNNEL[other]}/32", netns=ns)
            await sh("ip", "-n", ns, "addr", "add", f"{HAND_TUNNEL[i]}/24", "dev", ifname)
            if self.mtu is not None:
                await sh("ip", "-n", ns, "link", "set", ifname, "mtu", str(self.mtu))
            await sh("ip", "-n", ns, "link", "set", ifname, "up")

    async def link_mtu(self) -> int:
        out = await sh("cat", f"/sys/class/net/{self.ifnames[0]}/mtu", netns=self.topo["n1"])
        return int(out)

    async def stop(self) -> None:
        for daemon in self.daemons:
            await kill(daemon)
        if self.kind == "kernel":
            for role, ifname in zip(("n1", "n2"), self.ifnames, strict=True):
                with contextlib.suppress(RuntimeError):
                    await sh("ip", "-n", self.topo[role], "link", "del", ifname)
        for ifname in self.ifnames:
            (self.keydir / f"{ifname}.key").unlink(missing_ok=True)


# ---- the fabric's vWires -----------------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """One remote connection of a row: its id, the client (node 1) and endpoint (node 2)
    namespaces by role, their addresses and interface names (None: generated), and the
    WireGuard ports of a device per vWire."""

    cid: str
    client: str
    endpoint: str
    addrs: tuple[str, str]
    ifnames: tuple[str | None, str | None]
    ports: tuple[int, int] = FABRIC_PORTS


def aggregate_wires(count: int, *, shared: bool) -> list[Wire]:
    """The aggregate rows' connections ac<i> <-> ae<i>: 172.20.<i>.0/24 and ``nsm0``/``nse0``
    with ports from :data:`AGGREGATE_PORT_BASE` (devices per vWire), 172.21.<i>.0/24 and
    :data:`SHARED_IFNAMES` (over the shared devices): both sets live side by side."""
    net, ifnames, tag = ("172.21", SHARED_IFNAMES, "shared-") if shared else (
        "172.20", ("nsm0", "nse0"), "")
    return [Wire(f"bench-{tag}aggregate-{i}", f"ac{i}", f"ae{i}", (f"{net}.{i}.1", f"{net}.{i}.2"),
                 ifnames, (AGGREGATE_PORT_BASE + 2 * i, AGGREGATE_PORT_BASE + 2 * i + 1))
            for i in range(count)]


def remote_specs(topo: Topo, cid: str, ports: tuple[int, int], named: bool = True,
                 *, jumbo: bool = False) -> tuple[RemoteVWireSpec, RemoteVWireSpec]:
    """Both sides of one remote vWire c1 (node 1) <-> e2 (node 2), fresh keys; ``jumbo``: over
    the jumbo underlay, as ``nsm1``/``nse1``."""
    names = ("nsm1", "nse1") if jumbo else ("nsm0", "nse0")
    wire = Wire(cid, "c1", "e2", JUMBO_ADDRS if jumbo else REMOTE_ADDRS,
                names if named else (None, None), ports)
    return wire_specs(topo, wire, JUMBO_UNDERLAY if jumbo else UNDERLAY)


def wire_specs(topo: Topo, wire: Wire, underlay: dict[str, tuple[str, str]] = UNDERLAY,
               ) -> tuple[RemoteVWireSpec, RemoteVWireSpec]:
    """Both sides of ``wire`` as a remote vWire with a device per side, fresh keys."""
    priv_a, pub_a = generate_keypair()
    priv_b, pub_b = generate_keypair()
    a, b = (f"{ip}/32" for ip in wire.addrs)
    (ua, ip_a), (ub, ip_b) = underlay["n1"], underlay["n2"]
    client = RemoteVWireSpec(
        connection_id=wire.cid,
        workload=Attachment(topo.path(wire.client), wire.ifnames[0], (a,)),
        peer=WireGuardPeerSpec(pub_b, (ip_b, wire.ports[1]), (b,)),
        private_key=priv_a, underlay_ifname=ua, underlay_netns=topo.path("n1"),
        listen_port=wire.ports[0],
    )
    endpoint = RemoteVWireSpec(
        connection_id=wire.cid,
        workload=Attachment(topo.path(wire.endpoint), wire.ifnames[1], (b,)),
        peer=WireGuardPeerSpec(pub_a, (ip_a, wire.ports[0]), (a,)),
        private_key=priv_b, underlay_ifname=ub, underlay_netns=topo.path("n2"),
        listen_port=wire.ports[1],
    )
    return client, endpoint


@contextlib.asynccontextmanager
async def shared_nodes(topo: Topo, kernel: KernelPort, backend: WireGuardBackend,
                       ) -> AsyncIterator[tuple[SharedDevices, SharedDevices]]:
    """Each node's :class:`SharedDevices` (node 1's, node 2's), started with the node's
    namespace as underlay and a port range of its own; stopped (devices deleted, namespace let
    go of) however the block ends."""
    nodes: list[SharedDevices] = []
    try:
        for role in ("n1", "n2"):
            devices = SharedDevices(kernel, backend, PortPool(SHARED_PORTS[role]),
                                    f"bench-{role}", topo.path(role))
            nodes.append(devices)
            await devices.start()
        yield nodes[0], nodes[1]
    finally:
        for devices in reversed(nodes):
            await devices.stop()


def shared_spec(topo: Topo, wire: Wire, side: str, peer: SharedPeerSpec,
                space: int | None) -> SharedVWireSpec:
    """One side (``client``: node 1, ``endpoint``: node 2) of ``wire`` over shared devices."""
    i = 0 if side == "client" else 1
    node = "n1" if i == 0 else "n2"
    return SharedVWireSpec(
        connection_id=wire.cid,
        workload=Attachment(topo.path(getattr(wire, side)), wire.ifnames[i],
                            (f"{wire.addrs[i]}/32",)),
        peer=peer, underlay_ifname=UNDERLAY[node][0], underlay_netns=topo.path(node),
        space=space, ipv6_underlay=False,
    )


async def program_shared_wire(kernel: KernelPort, nodes: tuple[SharedDevices, SharedDevices],
                              topo: Topo, wire: Wire) -> list[VWire]:
    """Both sides of ``wire`` over the nodes' shared devices, in the forwarders' order: the
    endpoint side first (it chooses the space and does not dial), then the client side (in that
    space, dialling the endpoint side's device port). On failure what was made is closed."""
    client_devices, endpoint_devices = nodes
    endpoint = await program_shared(kernel, endpoint_devices, shared_spec(
        topo, wire, "endpoint", SharedPeerSpec(client_devices.public_key, None,
                                               (f"{wire.addrs[0]}/32",)), None))
    try:
        port = endpoint.listen_port
        if port is None:
            raise RuntimeError(f"{wire.cid}: the endpoint side's shared device has no port")
        client = await program_shared(kernel, client_devices, shared_spec(
            topo, wire, "client", SharedPeerSpec(
                endpoint_devices.public_key, (UNDERLAY["n2"][1], port), (f"{wire.addrs[1]}/32",),
                keepalive=SHARED_KEEPALIVE), endpoint.space))
    except BaseException:
        await endpoint.close()
        raise
    return [client, endpoint]


def local_spec(topo: Topo, cid: str, named: bool = True) -> LocalVWireSpec:
    """A local vWire lc <-> le on node 1."""
    a, b = (f"{ip}/24" for ip in LOCAL_ADDRS)
    return LocalVWireSpec(
        cid,
        Attachment(topo.path("lc"), "nsm0" if named else None, (a,)),
        Attachment(topo.path("le"), "nse0" if named else None, (b,)),
    )


async def program_both(kernel: KernelPort, backend: WireGuardBackend,
                       specs: Sequence[RemoteVWireSpec]) -> list[VWire]:
    """Program the sides one after the other; on failure close what was made and re-raise."""
    done: list[VWire] = []
    try:
        for spec in specs:
            done.append(await program_remote(kernel, backend, spec))
    except BaseException:
        await close_all(done)
        raise
    return done


async def close_all(vwires: Sequence[VWire]) -> None:
    for vwire in vwires:
        await vwire.close()


# ---- measurements --------------------------------------------------------------------------------

Row = Callable[[], Awaitable[float]]


async def measure_throughput(topo: Topo, kernel: KernelPort, backend: WireGuardBackend,
                             config: Config, results: Results, deadline: Deadline) -> None:
    """Set up every row once, then measure all rows ``config.rounds`` times, interleaved; what
    was set up is undone however it ends (every undo runs even when one fails)."""
    underlay_mtu = int(await sh("cat", "/sys/class/net/ua/mtu", netns=topo["n1"]))
    results.mtus["veth"] = underlay_mtu
    with tempfile.TemporaryDirectory(prefix="vwd-keys-") as keydir:
        async with contextlib.AsyncExitStack() as stack:
            rows: dict[str, Row] = {
                "veth": lambda: iperf(topo["n2"], topo["n1"], UNDERLAY["n2"][1], config.seconds),
            }
            rows.update(await _hand_rows(topo, underlay_mtu - WG_OVERHEAD_IPV4, Path(keydir),
                                         config, results))
            rows.update(await _fabric_rows(stack, topo, kernel, backend, config, results))
            rows.update(await shared_rows(stack, topo, kernel, backend, config, results))
            for row in AGGREGATE_ROWS:  # last in each round, after the single-stream rows
                if row in rows:
                    rows[row] = rows.pop(row)
            for round_no in range(1, config.rounds + 1):
                for row, measure in rows.items():
                    if deadline.left() < config.seconds + 20:
                        raise TimeoutError("--max-seconds reached during throughput rounds")
                    progress(NAME, f"throughput round {round_no}/{config.rounds}: {row} "
                                   f"({config.seconds:g} s of iperf3)")
                    results.rounds.setdefault(row, []).append(round(await measure(), 3))


async def _hand_rows(topo: Topo, fabric_mtu: int, keydir: Path, config: Config,
                     results: Results) -> dict[str, Row]:
    """The hand-made tunnels' rows. They share interface names and ports: one at a time, so
    each row sets its tunnel up, measures and removes it."""
    hand: dict[str, tuple[str, int | None]] = {
        "wireguard_go": ("wireguard-go", None),
        "wireguard_go_same_mtu": ("wireguard-go", fabric_mtu),
    }
    if await kernel_wireguard_available():
        hand["kernel_wireguard"] = ("kernel", None)
    else:
        results.skipped["kernel_wireguard"] = "the kernel has no WireGuard module"
    return {row: _hand_row(topo, kind, mtu, keydir, config, results, row)
            for row, (kind, mtu) in hand.items()}


async def _kept(stack: contextlib.AsyncExitStack, made: Awaitable[list[VWire]]) -> list[VWire]:
    """The vWires ``made``, closed when ``stack`` unwinds."""
    vwires = await made
    stack.push_async_callback(close_all, vwires)
    return vwires


async def _fabric_rows(stack: contextlib.AsyncExitStack, topo: Topo, kernel: KernelPort,
                       backend: WireGuardBackend, config: Config, results: Results,
                       ) -> dict[str, Row]:
    """The fabric's vWires with a device per vWire, and the local one: set up, closed by
    ``stack``."""
    seconds = config.seconds
    sides = await _kept(stack, program_both(kernel, backend,
                                            remote_specs(topo, "bench-remote", FABRIC_PORTS)))
    results.mtus["remote_vwire"] = sides[0].mtu
    jumbo = await _kept(stack, program_both(kernel, backend, remote_specs(
        topo, "bench-remote-jumbo", JUMBO_PORTS, jumbo=True)))
    results.mtus["remote_vwire_jumbo"] = jumbo[0].mtu
    local = await program_local(kernel, local_spec(topo, "bench-local"))
    stack.push_async_callback(local.close)
    results.mtus["local_vwire"] = local.mtu
    rows: dict[str, Row] = {
        "remote_vwire": lambda: iperf(topo["e2"], topo["c1"], REMOTE_ADDRS[1], seconds),
        "remote_vwire_jumbo": lambda: iperf(topo["e2"], topo["c1"], JUMBO_ADDRS[1], seconds),
        "local_vwire": lambda: iperf(topo["le"], topo["lc"], LOCAL_ADDRS[1], seconds),
    }
    if config.aggregate:
        wires = aggregate_wires(config.aggregate, shared=False)
        for wire in wires:
            made = await _kept(stack, program_both(kernel, backend, wire_specs(topo, wire)))
            results.mtus.setdefault("remote_vwire_aggregate", made[0].mtu)
        rows["remote_vwire_aggregate"] = lambda: iperf_all(topo, wires, seconds)
    else:
        results.skipped["remote_vwire_aggregate"] = "--aggregate 0"
    return rows


async def shared_rows(stack: contextlib.AsyncExitStack, topo: Topo, kernel: KernelPort,
                       backend: WireGuardBackend, config: Config, results: Results,
                       ) -> dict[str, Row]:
    """The vWires over the two nodes' shared devices (one device pair: every connection's
    addresses differ, so all are in space 0): set up, closed by ``stack``, devices stopped
    after them."""
    seconds = config.seconds
    nodes = await stack.enter_async_context(shared_nodes(topo, kernel, backend))
    single = Wire("bench-shared", "c1", "e2", SHARED_ADDRS, SHARED_IFNAMES)
    sides = await _kept(stack, program_shared_wire(kernel, nodes, topo, single))
    results.mtus["remote_vwire_shared"] = sides[0].mtu
    rows: dict[str, Row] = {"remote_vwire_shared": lambda: iperf_all(topo, [single], seconds)}
    if config.aggregate:
        wires = aggregate_wires(config.aggregate, shared=True)
        for wire in wires:
            made = await _kept(stack, program_shared_wire(kernel, nodes, topo, wire))
            results.mtus.setdefault("remote_vwire_shared_aggregate", made[0].mtu)
        rows["remote_vwire_shared_aggregate"] = lambda: iperf_all(topo, wires, seconds)
    else:
        results.skipped["remote_vwire_shared_aggregate"] = "--aggregate 0"
    devices = {d.wg_name for node in nodes for d in node.devices()}
    if len(devices) != 2:  # what the rows stand for: one device per node
        raise RuntimeError(f"the shared rows run over {len(devices)} devices, not 2")
    return rows


def _hand_row(topo: Topo, kind: str, mtu: int | None, keydir: Path, config: Config,
              results: Results, row: str) -> Row:
    async def measure() -> float:
        tunnel = HandTunnel(topo, kind, mtu, keydir)
        try:
            await tunnel.start()
            results.mtus[row] = await tunnel.link_mtu()
            return await iperf(topo["n2"], topo["n1"], HAND_TUNNEL[1], config.seconds)
        finally:
            await tunnel.stop()

    return measure


async def measure_setup(topo: Topo, kernel: KernelPort, backend: WireGuardBackend,
                        config: Config, results: Results, deadline: Deadline) -> None:
    """Time ``config.connections`` remote vWires (both sides) and as many local ones."""
    for i in range(config.connections):
        if deadline.expired():
            raise TimeoutError("--max-seconds reached during setup timing")
        ports = (SETUP_PORT_BASE + 2 * i, SETUP_PORT_BASE + 2 * i + 1)
        specs = remote_specs(topo, f"bench-setup-r{i}", ports, named=False)
        start = time.perf_counter()
        sides = await program_both(kernel, backend, specs)
        results.remote_setup.append(time.perf_counter() - start)
        await close_all(sides)
    for i in range(config.connections):
        if deadline.expired():
            raise TimeoutError("--max-seconds reached during setup timing")
        start = time.perf_counter()
        local = await program_local(kernel, local_spec(topo, f"bench-setup-l{i}", named=False))
        results.local_setup.append(time.perf_counter() - start)
        await local.close()


async def measure(config: Config) -> Results:
    """Build the topology, run every measurement, always tear everything down."""
    deadline = Deadline(config.max_seconds)
    results = Results()
    remove_stale_namespaces()
    kernel = real_kernel()
    backend = await detect_backend()
    topo = Topo({})
    try:
        progress(NAME, f"building the namespaces (WireGuard backend: {backend.kind})")
        topo = await build(config.aggregate)
        await measure_throughput(topo, kernel, backend, config, results, deadline)
        progress(NAME, "measuring vWire setup times")
        await measure_setup(topo, kernel, backend, config, results, deadline)
    finally:
        progress(NAME, "tearing the namespaces down")
        close = getattr(backend, "close", None)
        if close is not None:
            await close()
        await teardown(topo)
    results.backend = backend.kind
    return results


# ---- output ----------------------------------------------------------------------------------

#: ratio -> (shared row, the device-per-vWire row it is held against)
SHARED_RATIOS = {
    "shared_vs_per_vwire": ("remote_vwire_shared", "remote_vwire"),
    "shared_vs_per_vwire_aggregate": ("remote_vwire_shared_aggregate", "remote_vwire_aggregate"),
}


def metrics_of(results: Results) -> list[Metric]:
    out = [Metric(f"{row}_gbps", results.best(row), "Gbit/s") for row in results.rounds]
    remote, hand = results.best("remote_vwire"), results.best("wireguard_go_same_mtu")
    out.append(Metric("remote_vs_wireguard_go", round(remote / hand, 3), "x", REMOTE_GOAL,
                      higher_is_better=True))
    out.append(Metric("remote_vs_wireguard_go_default_mtu",
                      round(remote / results.best("wireguard_go"), 3), "x"))
    out.append(Metric("jumbo_vs_1500_path",
                      round(results.best("remote_vwire_jumbo") / remote, 3), "x", JUMBO_GOAL,
                      higher_is_better=True))
    out.append(Metric("local_vs_veth", round(results.best("local_vwire") / results.best("veth"),
                                             3), "x", LOCAL_GOAL, higher_is_better=True))
    for name, (shared, per_vwire) in SHARED_RATIOS.items():
        if shared in results.rounds and per_vwire in results.rounds:
            out.append(Metric(name, round(results.best(shared) / results.best(per_vwire), 3),
                              "x"))
    if "kernel_wireguard" in results.rounds:
        out.append(Metric("remote_vs_kernel_wireguard",
                          round(remote / results.best("kernel_wireguard"), 3), "x"))
    for name, samples in (("remote", results.remote_setup), ("local", results.local_setup)):
        if samples:
            out.append(Metric(f"{name}_setup_p50_ms", ms(percentile(samples, 50)), "ms"))
            out.append(Metric(f"{name}_setup_p99_ms", ms(percentile(samples, 99)), "ms"))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.dataplane", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seconds", type=float, default=Config.seconds, help="iperf3 run length")
    p.add_argument("--rounds", type=int, default=Config.rounds, help="rounds of every row")
    p.add_argument("--connections", type=int, default=Config.connections,
                   help="vWires timed for setup p50/p99")
    p.add_argument("--max-seconds", type=float, default=Config.max_seconds,
                   help="wall-clock budget of the whole run")
    p.add_argument("--aggregate", type=int, default=Config.aggregate,
                   help=f"connections at once in the aggregate rows (0..{MAX_AGGREGATE}; "
                        "0: no aggregate rows)")
    return p


def config_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    """The run's settings; bad ones end the program through ``parser.error`` naming the flag."""
    if not 1 <= args.seconds <= 60 or not 1 <= args.rounds <= 10 or args.connections < 1:
        parser.error("--seconds 1..60, --rounds 1..10, --connections >= 1")
    if not 0 <= args.aggregate <= MAX_AGGREGATE:
        parser.error(f"--aggregate {args.aggregate}: use 0..{MAX_AGGREGATE} (0: no aggregate "
                     "rows)")
    return Config(args.seconds, args.rounds, args.connections, args.max_seconds, args.aggregate)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    require_root(parser, ("ip", "iperf3", "wg"), "apt-get install iproute2 iperf3 wireguard-tools")
    config = config_of(parser, args)
    log.configure("warning", json=True)  # keep the data plane's info lines out of the output
    results = asyncio.run(measure(config))
    info: dict[str, Any] = {
        "backend": results.backend, "seconds": config.seconds, "rounds": config.rounds,
        "connections": config.connections, "aggregate": config.aggregate,
        "best_of_rounds": results.rounds, "mtu": results.mtus, "notes": results.skipped,
    }
    print(report(metrics_of(results), info, args.json))
    if not args.json:
        for row, why in results.skipped.items():
            print(f"note: {row}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
