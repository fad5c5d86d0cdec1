"""Shared WireGuard device or device per vWire: the two userspace data planes side by side.

Run (root): ``python -m bench.shareddevice [--sizes 1,10,50] [--seconds S] [--rounds R]
[--parallel K] [--json]``; ``--quick`` is a small run (sizes 1,3, 1 s of iperf3, one round).

Where the kernel has no WireGuard every connection costs a ``wireguard-go`` daemon per side.
This benchmark builds both data planes with real parts (namespaces ``vws<pid>-...``, real
``wireguard-go`` configured through its UAPI socket, ``ip``, ``nft``; everything removed at the
end whatever happens), by hand and with the same tools, so they differ only in their shape:

- ``per_vwire`` (today): per connection and side a ``wireguard-go`` started in the node
  namespace (its UDP socket stays there), configured (key, port, one peer, the far address as
  allowed IP) and its interface moved into the workload namespace, which holds the address.
  Every connection uses the same inner addresses (10.70.0.1 <-> 10.70.0.2): namespaces keep
  them apart.
- ``shared``: one ``wireguard-go`` per node pair and side, in the node namespace, with one peer
  (the other node); per connection and side a veth pair (``vsNNN`` in the node namespace,
  ``nsm0`` in the workload, link-local next hop 169.254.0.1), a host route each way, the far
  address appended to the peer's allowed IPs (UAPI ``update_only``), and an element of an
  nftables set that lets exactly (node veth, inner source, inner destination) through the node
  (forward policy drop; workloads may not reach the node itself). Inner addresses must be unique
  per device (10.80.x.y <-> 10.81.x.y).

Measured per size N (both modes, one after the other, in one run): wireguard-go RSS and PSS of
all daemons with N connections up; setup time per connection (both sides, p50/p99; the shared
device's own start is reported once); CPU per connection for setup (this process, its commands
and the daemons). At the largest N, both modes stay up together and are measured interleaved,
best of ``--rounds``: single-connection throughput (``iperf3`` between the workload
namespaces) and the aggregate of ``--parallel`` connections at once, with the daemons' CPU per
Gbit moved. Ratios are shared / per-vWire.

Isolation (real packets, counted by nftables counters in the receiving namespace):

- overlapping inner addresses: two connections on the same node pair both 10.70.0.1 <->
  10.70.0.2, in each mode; for the shared mode also the variant "a second device pair per
  overlapping address space, chosen by policy routing (``ip rule iif``)", with its cost;
- an attacker in a workload namespace of the shared mode (it may change its own namespace):
  a spoofed inner source (another connection's client address) towards that connection's
  endpoint, another connection's endpoint, a neighbour workload on the same node, the node's
  own underlay address; with no filter, with ``rp_filter=1`` in the node namespace, and with the
  nftables set; and the same probes against a device per vWire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
from bench.dataplane import iperf, kill, sh
from bench.procstat import CpuMeter, cpu_seconds, pss_bytes, rss_bytes, self_cpu
from forwarder.wireguard import generate_keypair
from forwarder.wireguard.keys import b64_to_hex
from forwarder.wireguard.uapi import UapiClient
from sdk import log

NAME = "bench.shareddevice"
PREFIX = "vws"
NETNS_DIR = Path("/var/run/netns")
UNDERLAY = (("ua", "10.99.0.1"), ("ub", "10.99.0.2"))
MTU = 1440  # underlay 1500 - 60 (WireGuard over IPv4)
HOP = "169.254.0.1"  # the node side of every workload veth (shared mode)
OVERLAP = ("10.70.0.1", "10.70.0.2")
PER_VWIRE_PORT = 30000  # + 2i (node 1), + 2i + 1 (node 2): below the ephemeral range
SHARED_PORT = 31800  # + 2 * space, + 2 * space + 1
FILTER_TABLE = "vwshared"
MODES = ("per_vwire", "shared")
UID = os.getpid() % 10000

FILTER_RULES = f"""
table ip {FILTER_TABLE} {{
  set allow {{ type ifname . ipv4_addr . ipv4_addr ; }}
  chain forward {{ type filter hook forward priority 0; policy drop;
    oifname "ws*" iifname . ip saddr . ip daddr @allow accept
    iifname "ws*" oifname . ip daddr . ip saddr @allow accept
  }}
  chain input {{ type filter hook input priority 0; policy accept;
    iifname "vs*" drop
  }}
}}
"""
PROBE_RULES = """
table ip vwprobe {
  chain input { type filter hook input priority 100; policy accept;
    icmp type echo-request counter
  }
}
"""


@dataclass
class Config:
    sizes: tuple[int, ...] = (1, 10, 50)
    seconds: float = 3.0
    rounds: int = 2
    parallel: int = 4
    max_seconds: float = 600.0


@dataclass
class ModeResult:
    setup: dict[int, list[float]] = field(default_factory=dict)  # N -> seconds per connection
    setup_cpu: dict[int, float] = field(default_factory=dict)  # N -> CPU seconds per connection
    memory: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # N -> daemons, rss, pss
    device_setup: float = 0.0  # the shared device pair's own start (shared mode)
    single: list[float] = field(default_factory=list)  # Gbit/s per round
    aggregate: list[float] = field(default_factory=list)
    cpu_per_gbit: list[float] = field(default_factory=list)  # daemon CPU ms per Gbit moved
    memory_after_traffic: tuple[int, int, int] = (0, 0, 0)


@dataclass
class Results:
    modes: dict[str, ModeResult] = field(default_factory=lambda: {m: ModeResult() for m in MODES})
    isolation: dict[str, str] = field(default_factory=dict)


# ---- namespaces, daemons, commands ---------------------------------------------------------------


async def batch(netns: str, lines: Sequence[str]) -> None:
    """Several ``ip`` commands in ``netns`` through one ``ip -batch`` process."""
    await sh("ip", "-n", netns, "-batch", "-", stdin="".join(f"{x}\n" for x in lines).encode())


class Daemon:
    """A ``wireguard-go -f IFNAME`` started in ``netns``; ready once its UAPI socket answers."""

    def __init__(self, netns: str, ifname: str) -> None:
        self.netns, self.ifname = netns, ifname
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await start_wireguard_go(self.netns, self.ifname)

    async def configure(self, private: str, port: int, peer_public: str,
                        endpoint: tuple[str, int], allowed: Sequence[str]) -> None:
        lines = [f"private_key={b64_to_hex(private)}", f"listen_port={port}",
                 f"public_key={b64_to_hex(peer_public)}", f"endpoint={endpoint[0]}:{endpoint[1]}",
                 "replace_allowed_ips=true", *(f"allowed_ip={a}/32" for a in allowed)]
        await UapiClient(self.ifname).set(lines)

    async def allow(self, peer_public: str, address: str) -> None:
        """Append one allowed IP to the (only) peer."""
        await UapiClient(self.ifname).set([f"public_key={b64_to_hex(peer_public)}",
                                           "update_only=true", f"allowed_ip={address}/32"])

    async def stop(self) -> None:
        if self.process is not None:
            await kill(self.process)


@dataclass
class NodePair:
    """Two node namespaces joined by an underlay veth, their workload namespaces and daemons."""

    tag: str
    prefix: str = ""  # namespace names start with it; "" -> vws<pid>
    workloads: list[str] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)
    keys: tuple[tuple[str, str], tuple[str, str]] = field(
        default_factory=lambda: (generate_keypair(), generate_keypair()))

    def ns(self, role: str) -> str:
        return f"{self.prefix or PREFIX + str(os.getpid())}-{self.tag}-{role}"

    @property
    def nodes(self) -> tuple[str, str]:
        return self.ns("n1"), self.ns("n2")

    async def build(self) -> None:
        for node in self.nodes:
            await sh("ip", "netns", "add", node)
            self.workloads.append(node)  # removed with the rest, last
            await batch(node, ["link set lo up"])
            await sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                     "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
        (a, _), (b, _) = UNDERLAY
        await sh("ip", "-n", self.nodes[0], "link", "add", a, "type", "veth", "peer", "name", b,
                 "netns", self.nodes[1])
        for node, (dev, ip) in zip(self.nodes, UNDERLAY, strict=True):
            await batch(node, [f"addr add {ip}/24 dev {dev}", f"link set {dev} up"])

    async def workload(self, role: str) -> str:
        name = self.ns(role)
        await sh("ip", "netns", "add", name)
        self.workloads.append(name)
        await batch(name, ["link set lo up"])
        await sh("ip", "netns", "exec", name, "sysctl", "-qw",
                 "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
        return name

    async def teardown(self) -> None:
        for daemon in self.daemons:
            await daemon.stop()
        for name in reversed(self.workloads):
            with contextlib.suppress(RuntimeError):
                await sh("ip", "netns", "del", name)
        self.workloads.clear()

    def daemon(self, ifname: str) -> Daemon:
        return next(d for d in self.daemons if d.ifname == ifname)

    def memory(self) -> tuple[int, int, int]:
        """(daemons, RSS bytes, PSS bytes) of every live wireguard-go of this pair."""
        pids = [d.pid for d in self.daemons]
        return len(pids), sum(rss_bytes(p) for p in pids), sum(pss_bytes(p) for p in pids)


def remove_stale_namespaces() -> None:
    """Delete ``vws<pid>-*`` namespaces of earlier runs whose process is gone."""
    for entry in NETNS_DIR.glob(f"{PREFIX}*-*") if NETNS_DIR.exists() else ():
        pid = entry.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", entry.name], capture_output=True, timeout=30)


def shared_addrs(i: int) -> tuple[str, str]:
    """Client and endpoint address of connection ``i`` in the shared mode (unique per device)."""
    return f"10.80.{i // 250}.{i % 250 + 1}", f"10.81.{i // 250}.{i % 250 + 1}"


# ---- the two data planes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Conn:
    """One connection: client namespace on node 1, endpoint namespace on node 2, addresses."""

    index: int
    client: str
    endpoint: str
    client_ip: str
    endpoint_ip: str


async def per_vwire_connect(pair: NodePair, conn: Conn) -> None:
    """Both sides of a device-per-vWire connection (endpoint side first, as the fabric)."""
    keys = (generate_keypair(), generate_keypair())
    ports = (PER_VWIRE_PORT + 2 * conn.index, PER_VWIRE_PORT + 2 * conn.index + 1)
    sides = ((1, conn.endpoint, conn.endpoint_ip, conn.client_ip),
             (0, conn.client, conn.client_ip, conn.endpoint_ip))
    for side, workload, mine, theirs in sides:
        ifname = f"wv{UID}{conn.index:03d}{'ab'[side]}"
        daemon = Daemon(pair.nodes[side], ifname)
        pair.daemons.append(daemon)
        await daemon.start()
        await daemon.configure(keys[side][0], ports[side], keys[1 - side][1],
                               (UNDERLAY[1 - side][1], ports[1 - side]), [theirs])
        await sh("ip", "-n", pair.nodes[side], "link", "set", ifname, "netns", workload)
        await batch(workload, [f"addr add {mine}/32 peer {theirs}/32 dev {ifname}",
                               f"link set {ifname} mtu {MTU} up"])


@dataclass
class SharedSpace:
    """One shared device pair (one address space): its interfaces and routing table."""

    space: int
    ifnames: tuple[str, str]
    table: str  # "main" for space 0, else a table chosen by ``ip rule iif``


async def shared_device(pair: NodePair, space: int, tag: str = "ws") -> SharedSpace:
    """Start the shared device pair of ``space`` (and, for space 0, the nftables filter)."""
    ifnames = (f"{tag}{UID}{space}a", f"{tag}{UID}{space}b")
    ports = (SHARED_PORT + 2 * space, SHARED_PORT + 2 * space + 1)
    table = "main" if space == 0 else str(1000 + space)
    for side in (0, 1):
        daemon = Daemon(pair.nodes[side], ifnames[side])
        pair.daemons.append(daemon)
        await daemon.start()
        await daemon.configure(pair.keys[side][0], ports[side], pair.keys[1 - side][1],
                               (UNDERLAY[1 - side][1], ports[1 - side]), [])
        lines = [f"link set {ifnames[side]} mtu {MTU} up"]
        if space:
            lines.append(f"rule add iif {ifnames[side]} lookup {table}")
        await batch(pair.nodes[side], lines)
    return SharedSpace(space, ifnames, table)


async def load_filter(pair: NodePair) -> None:
    for node in pair.nodes:
        await sh("nft", "-f", "-", netns=node, stdin=FILTER_RULES.encode())


async def shared_connect(pair: NodePair, dev: SharedSpace, conn: Conn, *,
                         filtered: bool = True) -> None:
    """Both sides of a shared-device connection: veth, routes, allowed IP, filter element."""
    veth = f"vs{conn.index:03d}"
    sides = ((1, conn.endpoint, conn.endpoint_ip, conn.client_ip),
             (0, conn.client, conn.client_ip, conn.endpoint_ip))
    for side, workload, mine, theirs in sides:
        node, wg = pair.nodes[side], dev.ifnames[side]
        lines = [f"link add {veth} mtu {MTU} type veth peer name nsm0 netns {workload} mtu {MTU}",
                 f"addr add {HOP}/32 dev {veth}", f"link set {veth} up",
                 f"route add {mine}/32 dev {veth} table {dev.table}",
                 f"route add {theirs}/32 dev {wg} table {dev.table}"]
        if dev.space:
            lines.insert(3, f"rule add iif {veth} lookup {dev.table}")
        await batch(node, lines)
        await batch(workload, [f"addr add {mine}/32 dev nsm0", "link set nsm0 up",
                               f"route add {HOP}/32 dev nsm0",
                               f"route add {theirs}/32 via {HOP} dev nsm0"])
        await pair.daemon(wg).allow(pair.keys[1 - side][1], theirs)
        if filtered:
            await sh("nft", "add", "element", "ip", FILTER_TABLE, "allow",
                     f"{{ {veth} . {mine} . {theirs} }}", netns=node)



# ---- measurements --------------------------------------------------------------------------------


def _cpu_now(pair: NodePair) -> float:
    """CPU seconds so far of this process, its waited-for commands and the pair's daemons."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    daemons = cpu_seconds(d.pid for d in pair.daemons)
    return self_cpu() + children.ru_utime + children.ru_stime + sum(daemons.values())


async def make_connections(pair: NodePair, mode: str, n: int) -> list[Conn]:
    """The workload namespaces of ``n`` connections (not timed: workloads exist already)."""
    conns = []
    for i in range(n):
        client, endpoint = await pair.workload(f"c{i}"), await pair.workload(f"e{i}")
        addrs = OVERLAP if mode == "per_vwire" else shared_addrs(i)
        conns.append(Conn(i, client, endpoint, *addrs))
    return conns


async def set_up(mode: str, n: int, result: ModeResult,
                 deadline: Deadline) -> tuple[NodePair, list[Conn]]:
    """A node pair with ``n`` connections of ``mode``, timed; the caller tears it down."""
    pair = NodePair(f"{mode[0]}{n}")
    try:
        await pair.build()
        conns = await make_connections(pair, mode, n)
        dev = None
        if mode == "shared":
            start = time.perf_counter()
            await load_filter(pair)
            dev = await shared_device(pair, 0)
            result.device_setup = time.perf_counter() - start
        cpu_before, samples = _cpu_now(pair), []
        for conn in conns:
            if deadline.expired():
                raise TimeoutError(f"--max-seconds reached setting up {mode} connections")
            start = time.perf_counter()
            if dev is None:
                await per_vwire_connect(pair, conn)
            else:
                await shared_connect(pair, dev, conn)
            samples.append(time.perf_counter() - start)
        result.setup_cpu[n] = (_cpu_now(pair) - cpu_before) / n
        result.setup[n] = samples
        result.memory[n] = pair.memory()
    except BaseException:
        await pair.teardown()
        raise
    return pair, conns


def _daemon_kinds(pair: NodePair) -> Callable[[], dict[int, str]]:
    return lambda: {d.pid: "wireguard-go" for d in pair.daemons}


async def throughput(live: dict[str, tuple[NodePair, list[Conn]]], config: Config,
                     results: Results, deadline: Deadline) -> None:
    """Single and aggregate throughput of every mode, interleaved, ``config.rounds`` times."""
    for round_no in range(1, config.rounds + 1):
        for mode, (pair, conns) in live.items():
            if deadline.left() < 2 * config.seconds + 30:
                raise TimeoutError("--max-seconds reached during throughput rounds")
            res, first = results.modes[mode], conns[0]
            k = min(config.parallel, len(conns))
            progress(NAME, f"round {round_no}/{config.rounds}: {mode}, 1 then {k} connections")
            res.single.append(await iperf(first.endpoint, first.client, first.endpoint_ip,
                                          config.seconds))
            meter = CpuMeter(_daemon_kinds(pair))
            meter.start()
            rates = await asyncio.gather(*(iperf(c.endpoint, c.client, c.endpoint_ip,
                                                 config.seconds) for c in conns[:k]))
            cpu = meter.stop().get("wireguard-go", 0.0)
            res.aggregate.append(sum(rates))
            res.cpu_per_gbit.append(cpu * 1000 / max(sum(rates) * config.seconds, 1e-9))
    for mode, (pair, _) in live.items():
        results.modes[mode].memory_after_traffic = pair.memory()


async def measure_sizes(config: Config, results: Results, deadline: Deadline) -> None:
    """Every size in both modes; at the largest both stay up for the throughput rounds."""
    largest = max(config.sizes)
    for n in sorted(config.sizes):
        live: dict[str, tuple[NodePair, list[Conn]]] = {}
        try:
            for mode in MODES:
                progress(NAME, f"{mode}: setting up {n} connection(s)")
                live[mode] = await set_up(mode, n, results.modes[mode], deadline)
                if n != largest:
                    await live.pop(mode)[0].teardown()
            if n == largest:
                await throughput(live, config, results, deadline)
        finally:
            for pair, _ in live.values():
                await pair.teardown()


# ---- isolation -----------------------------------------------------------------------------------


async def probe_count(netns: str) -> int:
    out = await sh("nft", "list", "chain", "ip", "vwprobe", "input", netns=netns)
    found = re.search(r"packets (\d+)", out)
    return int(found.group(1)) if found else 0


async def arrives(target: str, source_ns: str, src: str, dst: str) -> bool:
    """Whether one ping from ``source_ns`` (source ``src``) to ``dst`` reaches ``target``."""
    before = await probe_count(target)
    with contextlib.suppress(RuntimeError):  # no reply is expected for some probes
        await sh("ping", "-n", "-q", "-c1", "-W1", "-I", src, dst, netns=source_ns)
    return await probe_count(target) > before


async def probes(namespaces: Sequence[str]) -> None:
    for netns in namespaces:
        await sh("nft", "-f", "-", netns=netns, stdin=PROBE_RULES.encode())


async def handshake(conns: Sequence[Conn]) -> None:
    """Every connection answers a ping (its first handshake done), or RuntimeError."""
    for c in conns:
        await sh("ping", "-n", "-q", "-c1", "-W3", "-I", c.client_ip, c.endpoint_ip,
                 netns=c.client)


def yes_no(value: bool) -> str:
    return "arrives" if value else "blocked"


async def isolation_overlap_per_vwire(results: Results) -> None:
    pair = NodePair("io")
    try:
        await pair.build()
        conns = await make_connections(pair, "per_vwire", 2)
        for conn in conns:
            await per_vwire_connect(pair, conn)
        await handshake(conns)
        await probes([c.endpoint for c in conns])
        own = [await arrives(c.endpoint, c.client, c.client_ip, c.endpoint_ip) for c in conns]
        cross = [await arrives(conns[1 - i].endpoint, c.client, c.client_ip, c.endpoint_ip)
                 for i, c in enumerate(conns)]
        ok = all(own) and not any(cross)
        results.isolation["per_vwire overlapping 10.70.0.1<->10.70.0.2 x2"] = (
            "isolated: each client reaches only its own endpoint" if ok else
            f"NOT isolated (own {own}, other {cross})")
    finally:
        await pair.teardown()


async def isolation_overlap_shared(results: Results) -> None:
    pair = NodePair("so")
    try:
        await pair.build()
        c0, c1, c2 = [(await pair.workload(f"c{i}"), await pair.workload(f"e{i}"))
                      for i in range(3)]
        await load_filter(pair)
        dev0 = await shared_device(pair, 0)
        await kernel_options(pair, dev0, results)
        first = Conn(0, *c0, *OVERLAP)
        await shared_connect(pair, dev0, first)
        try:
            await shared_connect(pair, dev0, Conn(1, *c1, *OVERLAP))
            outcome = "accepted (ambiguous routing!)"
        except RuntimeError as exc:
            why = re.search(r"RTNETLINK answers: [^\n]*", str(exc))
            outcome = "refused by the node's routing table: " + (why[0] if why else str(exc))
        results.isolation["shared, one device, same addresses twice"] = outcome
        before = pair.memory()
        start = time.perf_counter()
        dev1 = await shared_device(pair, 1)
        device = time.perf_counter() - start
        start = time.perf_counter()
        third = Conn(2, *c2, *OVERLAP)
        await shared_connect(pair, dev1, third)
        conn_time = time.perf_counter() - start
        after = pair.memory()
        await handshake([first, third])
        await probes([first.endpoint, third.endpoint])
        own = [await arrives(c.endpoint, c.client, c.client_ip, c.endpoint_ip)
               for c in (first, third)]
        cross = await arrives(first.endpoint, third.client, third.client_ip, third.endpoint_ip)
        results.isolation["shared, device pair per address space + ip rule iif"] = (
            f"{'isolated' if all(own) and not cross else 'NOT isolated'}; second device pair "
            f"start {ms(device):.1f} ms, its first connection {ms(conn_time):.1f} ms, "
            f"+{_mb(after[1] - before[1])} MB RSS, +{_mb(after[2] - before[2])} MB PSS")
        for node in pair.nodes:
            await sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", netns=node)
        results.isolation["  same, with rp_filter=1 on the nodes"] = (
            "traffic of the second space " + yes_no(
                await arrives(third.endpoint, third.client, third.client_ip, third.endpoint_ip)))
    finally:
        await pair.teardown()


async def attack(attacker: Conn, victim: Conn, via: list[str], node: str) -> dict[str, bool]:
    """What the attacker's namespace reaches: ``via`` is its route (``via HOP dev nsm0`` or
    ``dev IFNAME``); the spoofing probe comes last (it adds the victim's address)."""
    lines = [f"route replace {dst}/32 {' '.join(via)}"
             for dst in (victim.endpoint_ip, victim.client_ip, UNDERLAY[0][1])]
    await batch(attacker.client, lines)
    src, ns = attacker.client_ip, attacker.client
    out = {
        "another connection's endpoint": await arrives(victim.endpoint, ns, src,
                                                       victim.endpoint_ip),
        "a neighbour workload on the node": await arrives(victim.client, ns, src,
                                                          victim.client_ip),
        "the node's underlay address": await arrives(node, ns, src, UNDERLAY[0][1]),
    }
    await batch(ns, [f"addr add {victim.client_ip}/32 dev {via[-1]}"])
    out["spoofed source (the victim client's) to its endpoint"] = await arrives(
        victim.endpoint, ns, victim.client_ip, victim.endpoint_ip)
    await batch(ns, [f"addr del {victim.client_ip}/32 dev {via[-1]}"])
    return out


async def kernel_options(pair: NodePair, dev: SharedSpace, results: Results) -> None:
    """Whether the cheaper attachment (ipvlan on the shared device, or on an Ethernet-like
    dummy) and VRF for address spaces are possible here; what the kernel says when not."""
    node = pair.nodes[0]
    tries = {
        "ipvlan on the shared device": f"link add link {dev.ifnames[0]} name ipv0 type ipvlan "
                                       "mode l3",
        "ipvlan on an Ethernet-like device": "link add link ua name ipv1 type ipvlan mode l3",
        "VRF per address space": "link add vrf1 type vrf table 1001",
    }
    for what, line in tries.items():
        try:
            await batch(node, [line])
            outcome = "possible"
        except RuntimeError as exc:
            why = re.search(r"Error: [^\n]*|RTNETLINK answers: [^\n]*", str(exc))
            outcome = "not possible here: " + (why[0] if why else str(exc))
        results.isolation[f"kernel: {what}"] = outcome


def record_attack(results: Results, label: str, outcome: dict[str, bool]) -> None:
    for what, arrived in outcome.items():
        results.isolation[f"{label}: {what}"] = yes_no(arrived)


async def isolation_attacks(results: Results) -> None:
    pair = NodePair("sa")
    try:
        await pair.build()
        conns = await make_connections(pair, "shared", 2)
        dev = await shared_device(pair, 0)
        for conn in conns:
            await shared_connect(pair, dev, conn, filtered=False)
        await handshake(conns)
        await probes([conns[1].endpoint, conns[1].client, pair.nodes[0]])
        via = ["via", HOP, "dev", "nsm0"]
        record_attack(results, "shared, no filter", await attack(conns[0], conns[1], via,
                                                                   pair.nodes[0]))
        for node in pair.nodes:
            await sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", netns=node)
        record_attack(results, "shared, rp_filter=1", await attack(conns[0], conns[1], via,
                                                                   pair.nodes[0]))
        for node in pair.nodes:
            await sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", netns=node)
        await load_filter(pair)
        for conn in conns:
            for side, (mine, theirs) in enumerate(((conn.client_ip, conn.endpoint_ip),
                                                   (conn.endpoint_ip, conn.client_ip))):
                await sh("nft", "add", "element", "ip", FILTER_TABLE, "allow",
                         f"{{ vs{conn.index:03d} . {mine} . {theirs} }}", netns=pair.nodes[side])
        await handshake(conns)  # the filter lets the connections' own traffic through
        record_attack(results, "shared, nftables set", await attack(conns[0], conns[1], via,
                                                                   pair.nodes[0]))
    finally:
        await pair.teardown()
    pair = NodePair("pa")
    try:
        await pair.build()
        conns = [Conn(i, await pair.workload(f"c{i}"), await pair.workload(f"e{i}"),
                      *shared_addrs(i)) for i in range(2)]
        for conn in conns:
            await per_vwire_connect(pair, conn)
        await handshake(conns)
        await probes([conns[1].endpoint, conns[1].client, pair.nodes[0]])
        record_attack(results, "per_vwire", await attack(
            conns[0], conns[1], ["dev", f"wv{UID}000a"], pair.nodes[0]))
    finally:
        await pair.teardown()


async def measure(config: Config) -> Results:
    deadline = Deadline(config.max_seconds)
    results = Results()
    remove_stale_namespaces()
    await measure_sizes(config, results, deadline)
    progress(NAME, "isolation: overlapping addresses")
    await isolation_overlap_per_vwire(results)
    await isolation_overlap_shared(results)
    progress(NAME, "isolation: an attacker in a workload namespace")
    await isolation_attacks(results)
    return results


# ---- output --------------------------------------------------------------------------------------


def _mb(value: float) -> float:
    return round(value / 1e6, 2)


def _ratio(shared: float, per_vwire: float) -> float:
    return round(shared / per_vwire, 3) if per_vwire else 0.0


def size_metrics(results: Results, n: int) -> list[Metric]:
    per, sh_ = results.modes["per_vwire"], results.modes["shared"]
    out: list[Metric] = []
    for mode, res in results.modes.items():
        daemons, rss, pss = res.memory[n]
        out += [Metric(f"n{n}_{mode}_daemons", daemons),
                Metric(f"n{n}_{mode}_wg_rss", _mb(rss), "MB"),
                Metric(f"n{n}_{mode}_wg_pss", _mb(pss), "MB"),
                Metric(f"n{n}_{mode}_setup_p50", ms(percentile(res.setup[n], 50)), "ms"),
                Metric(f"n{n}_{mode}_setup_p99", ms(percentile(res.setup[n], 99)), "ms"),
                Metric(f"n{n}_{mode}_setup_cpu_per_conn", ms(res.setup_cpu[n]), "ms")]
    out += [Metric(f"n{n}_shared_vs_per_vwire_rss", _ratio(sh_.memory[n][1], per.memory[n][1]),
                   "x"),
            Metric(f"n{n}_shared_vs_per_vwire_pss", _ratio(sh_.memory[n][2], per.memory[n][2]),
                   "x"),
            Metric(f"n{n}_shared_vs_per_vwire_setup_p50",
                   _ratio(percentile(sh_.setup[n], 50), percentile(per.setup[n], 50)), "x"),
            Metric(f"n{n}_shared_vs_per_vwire_setup_cpu",
                   _ratio(sh_.setup_cpu[n], per.setup_cpu[n]), "x")]
    return out


def metrics_of(results: Results, config: Config) -> list[Metric]:
    out: list[Metric] = []
    for n in sorted(config.sizes):
        out += size_metrics(results, n)
    per, sh_ = results.modes["per_vwire"], results.modes["shared"]
    out.append(Metric("shared_device_pair_start", ms(sh_.device_setup), "ms"))
    n = max(config.sizes)
    for mode, res in results.modes.items():
        out += [Metric(f"{mode}_single_gbps", round(max(res.single), 3), "Gbit/s"),
                Metric(f"{mode}_aggregate_gbps", round(max(res.aggregate), 3), "Gbit/s"),
                Metric(f"{mode}_wg_cpu_per_gbit", round(min(res.cpu_per_gbit), 1), "ms"),
                Metric(f"n{n}_{mode}_wg_rss_after_traffic", _mb(res.memory_after_traffic[1]),
                       "MB")]
    out += [Metric("shared_vs_per_vwire_single", _ratio(max(sh_.single), max(per.single)), "x"),
            Metric("shared_vs_per_vwire_aggregate",
                   _ratio(max(sh_.aggregate), max(per.aggregate)), "x"),
            Metric("shared_vs_per_vwire_cpu_per_gbit",
                   _ratio(min(sh_.cpu_per_gbit), min(per.cpu_per_gbit)), "x")]
    return out


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: give counts like 1,10,50") from None
    if not sizes or not all(1 <= s <= 60 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: counts from 1 to 60")
    return sizes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.shareddevice",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sizes", type=_sizes, default=Config.sizes,
                   help="connection counts, comma-separated (1..60 each; default 1,10,50)")
    p.add_argument("--seconds", type=float, default=Config.seconds, help="iperf3 run length")
    p.add_argument("--rounds", type=int, default=Config.rounds, help="throughput rounds")
    p.add_argument("--parallel", type=int, default=Config.parallel,
                   help="connections measured at once for the aggregate throughput")
    p.add_argument("--max-seconds", type=float, default=Config.max_seconds,
                   help="wall-clock budget of the whole run")
    p.add_argument("--quick", action="store_true",
                   help="a small run: --sizes 1,3 --seconds 1 --rounds 1 --parallel 2")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    require_root(parser, ("ip", "iperf3", "wireguard-go", "nft", "ping"))
    if not 1 <= args.seconds <= 60 or not 1 <= args.rounds <= 10 or not 1 <= args.parallel <= 8:
        parser.error("--seconds 1..60, --rounds 1..10, --parallel 1..8")
    config = Config(args.sizes, args.seconds, args.rounds, args.parallel, args.max_seconds)
    if args.quick:
        config = Config((1, 3), 1.0, 1, 2, args.max_seconds)
    log.configure("warning", json=True)
    results = asyncio.run(measure(config))
    info: dict[str, Any] = {"sizes": ",".join(map(str, config.sizes)),
                            "seconds": config.seconds, "rounds": config.rounds,
                            "parallel": config.parallel}
    if args.json:
        info["isolation"] = results.isolation
        print(report(metrics_of(results, config), info, True))
        return 0
    print(report(metrics_of(results, config), info, False))
    print("\nisolation (real packets):")
    width = max(map(len, results.isolation))
    for what, outcome in results.isolation.items():
        print(f"  {what.ljust(width)}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
