"""Connection benchmark: remote setup latency and heal times on a real fabric, against a raw peer.

Run (root): ``python -m bench.connect [--sequential 100] [--concurrent 50] [--heal-trials 5]
[--wireguard-pool N] [--wireguard-pool-endpoints M] [--wireguard-reuse K] [--no-prepare-ahead]
[--wireguard-device per-vwire|shared] [--json]`` (``--wireguard-reuse``: the forwarders keep up
to K daemons of closed endpoint-side vWires for the next, default as
``VWIRE_FORWARDER_WIREGUARD_REUSE``; ``--wireguard-pool``: the forwarders keep N
wireguard-go daemons started ahead, see ``VWIRE_FORWARDER_WIREGUARD_POOL``, and with
``--wireguard-pool-endpoints`` N more each in up to M endpoint namespaces, moved in, see
``VWIRE_FORWARDER_WIREGUARD_POOL_ENDPOINTS``; ``--no-prepare-ahead``: they program a tunnel only
once the answer came, as before ``VWIRE_FORWARDER_PREPARE_AHEAD``; ``--wireguard-device
shared``: both sides share one wireguard-go per node pair and address space instead of one per
vWire, see ``VWIRE_FORWARDER_WIREGUARD_DEVICE``; the hand-made peer stays a tunnel per
connection). The settings are in the results' header.

Builds a 3-node fabric with :class:`lab.fabric.Fabric` (its own namespaces ``vwb<pid>-...``,
removed at the end whatever happens): endpoint ``nse-setup`` on n2 for the setup measurements,
and ``--heal-trials`` + 1 endpoints ``nse-<i>`` on n2 and n3 for the heal trials. It measures:

- **setup latency** of remote connections (WireGuard, n1 → n2/n3): ``--sequential`` requests one
  after the other (each closed before the next), then ``--concurrent`` requests at once, then as
  many again at once with the first burst still live, each by an in-process
  :class:`nsc.client.VWireClient` in one client namespace with distinct interface names (time
  from Request sent to the reply, i.e. both sides programmed); all are closed at the end;
- **cost**: CPU seconds of every process of the fabric (registry, nsmgrs, forwarders, endpoints,
  wireguard-go: each read from its CPU-time clock, so a daemon started during a setup counts in
  that setup; one that ended counts through its parent, once) and of this process (the client)
  per sequential setup (goal < 40 ms) and, apart, per close (each metered until ``SETTLE`` after
  its reply, so work done behind the reply counts);
- **scaling**: ``SCALING_ROUNDS`` rounds after the bursts, each begun with every connection closed:
  ``--concurrent`` setups one after the other, each left live (the burst's own work without its
  concurrency: as in the burst, the live ones' daemons all run and only the first few setups find a
  closed connection's kept daemon), then, all closed again, as many at once. A round's **scaling
  efficiency** = (its serial CPU / cores) / its burst's wall time (1.0: the burst is as fast as the
  machine's CPU allows); the median round's is held to the goal (≥ 0.8) and the worst round's is
  printed, with the median against the one-by-one sequential setups' CPU per setup (stricter: those
  may take a kept daemon), the CPU per setup of the serial setups and of the bursts, and the share
  of the machine's cores busy during the bursts (every process and the kernel's threads: whether a
  burst waited for CPU or for something else);
- **memory** at 0, one burst and two bursts of live connections: RSS of n1's and n2's nsmgr +
  forwarder (goal < 150 MB at 100), how many wireguard-go run, and RSS and PSS per wireguard-go
  device (PSS shares the binary's pages fairly). Memory is read at rest, ``MEMORY_REST`` seconds
  after the last call (after a quiet second a process gives back the free heap a burst left, see
  ``sdk.heaptrim``); the control plane's RSS right at a burst's end is printed too
  (``..._burst_end``);
- the **peer**, in the same run and interleaved with the sequential setups (one every
  ``sequential / 20`` setups, so both see the same load): the same data plane made by hand
  without any negotiation — per side a ``wireguard-go`` started in the node namespace (waiting
  for its UAPI socket), configured with ``wg set`` (key, port, peer, endpoint, allowed IPs),
  moved into a workload namespace, addressed and brought up with ``ip``; both sides, one after
  the other, as the two forwarders do. ``setup_p50_vs_raw_wireguard_go`` is the ratio of the
  two medians: what negotiation (7 gRPC hops, IPAM, tokens, monitor) and the forwarder's own
  bookkeeping add; ``cpu_per_setup_and_close_vs_raw_wireguard_go`` compares the CPU per setup
  and close with the CPU the peer's processes (wireguard-go, ``wg``, ``ip``) use to make and
  remove one tunnel;
- **heal** of a reference client process (``python -m nsc``): ``--heal-trials`` endpoint deaths
  (SIGKILL the endpoint in use; one never killed takes over, so trials do not depend on the
  circuit breaker's back-off for endpoints killed earlier) and as many forwarder restarts
  (SIGKILL n1's forwarder, start it again at once), each timed to the first ping answered over
  the healed connection (:func:`lab.heal.measure_heal`); every trial's time is printed.

Goals: setup p50 < 100 ms and p99 < 300 ms (sequential, remote) and at most the hand-made
tunnel's; concurrent p99 < 2 s; heal < 1 s (endpoint) and < 2 s (forwarder), held by the worst
trial. Every loop is bounded by its count and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import resource
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import (
    Deadline,
    Metric,
    ms,
    percentile,
    progress,
    report,
    require_root,
    running,
    start_wireguard_go,
)
from bench.procstat import CpuMeter, busy_share, machine_ticks, pss_bytes, rss_bytes
from forwarder.settings import WIREGUARD_DEVICES, ForwarderSettings
from forwarder.wireguard.keys import generate_keypair
from lab.clients import InProcessClients
from lab.fabric import Client, Fabric
from lab.heal import measure_heal
from lab.topology import Node, Topology
from sdk import log
from sdk.errors import FabricError
from sdk.heaptrim import QUIET

NAME = "bench.connect"
SERVICE = "bench"
SETUP_P50_GOAL_MS, SETUP_P99_GOAL_MS = 100.0, 300.0
CONCURRENT_P99_GOAL_MS = 2000.0
PEER_RATIO_GOAL = 1.01  # at or below the hand-made tunnel
CPU_PER_SETUP_GOAL_MS = 40.0
SCALING_GOAL = 0.8
CONTROL_RSS_GOAL_MB = 150.0
#: Seconds without calls before memory is read: a process trims its heap after QUIET of them.
MEMORY_REST = QUIET + 1.0
ENDPOINT_HEAL_GOAL_MS, FORWARDER_HEAL_GOAL_MS = 1000.0, 2000.0
PEER_TRIALS = 20
PEER_PORT = 41000
SETUP_SERVICE = "bench-setup"
SETUP_CIDRS = ("10.64.0.0/16", "fd00:64::/64")
SETTLE = 0.05  # seconds a sequential setup or close is metered after its reply
SCALING_ROUNDS = 3  # each a serial run and a burst: the efficiency is their median's


@dataclass
class Config:
    sequential: int = 100
    concurrent: int = 50
    heal_trials: int = 5
    max_seconds: float = 300.0
    wireguard_pool: int = 0
    wireguard_pool_endpoints: int = 0
    wireguard_reuse: int = ForwarderSettings().wireguard_reuse
    prepare_ahead: bool = True
    wireguard_device: str = "per-vwire"


@dataclass
class ScalingRound:
    """``count`` setups one after the other, each left live (the burst's work without its
    concurrency), then, all closed, as many at once (``made`` of them made): CPU seconds of
    each by kind of process, the burst's wall time and the share of the machine's cores busy
    during it."""

    count: int
    made: int
    serial_cpu: dict[str, float]
    burst_cpu: dict[str, float]
    wall: float
    busy: float

    def efficiency(self, cpu_per_setup: float | None = None) -> float:
        """The burst's wall time against the CPU its ``made`` setups take (one of the serial
        ones' each by default) spread over every core: 1.0 when the burst is as fast as the
        machine's CPU allows."""
        if cpu_per_setup is None:
            cpu_per_setup = sum(self.serial_cpu.values()) / self.count
        return self.made * cpu_per_setup / (os.cpu_count() or 1) / self.wall


@dataclass
class Results:
    sequential: list[float] = field(default_factory=list)
    #: CPU seconds of the sequential setups, and of their closes, by kind of process
    sequential_cpu: dict[str, float] = field(default_factory=dict)
    close_cpu: dict[str, float] = field(default_factory=dict)
    concurrent: list[float] = field(default_factory=list)
    concurrent_wall: float = 0.0
    scaling: list[ScalingRound] = field(default_factory=list)
    second_burst: list[float] = field(default_factory=list)  # with the first burst still live
    failures: int = 0  # setups of the bursts that failed
    first_failure: str = ""
    #: live connections -> {"nsmgr+forwarder n1": bytes, ..., "wireguard-go": [rss, pss] each}
    memory: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    #: the same, read as soon as a burst ended (before the processes trimmed their heaps)
    burst_end_memory: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    peer: list[float] = field(default_factory=list)
    #: CPU seconds of the peer's processes (wireguard-go, wg, ip) per hand-made tunnel
    peer_cpu: list[float] = field(default_factory=list)
    endpoint_heals: list[float] = field(default_factory=list)
    forwarder_heals: list[float] = field(default_factory=list)


# -- the vWire setup measurements -----------------------------------------------------------------


def fabric_pids(fabric: Fabric) -> dict[int, str]:
    """The fabric's processes (registry, nsmgrs, forwarders, endpoints) and its wireguard-go,
    by kind (the process name without its node or instance suffix)."""
    kinds = {pid: _kind(name) for name in fabric.processes.recorded()
             if (pid := fabric.processes.pid_of(name)) is not None}
    return {**kinds, **dict.fromkeys(fabric.wireguard_processes(), "wireguard-go")}


def _kind(process: str) -> str:
    """``n1-forwarder`` -> ``forwarder``, ``nse-setup`` -> ``nse``."""
    kind = re.sub(r"^n\d+-", "", process)
    return "nse" if kind.startswith("nse-") else kind


def memory_now(fabric: Fabric) -> dict[str, list[int]]:
    """RSS of each node's nsmgr + forwarder (the control plane), and [RSS, PSS] of every live
    wireguard-go daemon."""
    out: dict[str, list[int]] = {}
    for index in (1, 2):
        node = fabric.node(index)
        pids = [fabric.processes.pid_of(node.nsmgr_process),
                fabric.processes.pid_of(node.forwarder_process)]
        out[f"n{index}"] = [sum(rss_bytes(pid) for pid in pids if pid is not None)]
    out["wireguard-go"] = [rss for pid in fabric.wireguard_processes()
                           for rss in (rss_bytes(pid), pss_bytes(pid))]
    return out


async def measure_setup(fabric: Fabric, config: Config, results: Results,
                        deadline: Deadline) -> None:
    """Sequential, then two bursts of concurrent remote connections from an in-process client on
    n1; CPU over the sequential phase and the first burst, memory at 0, one and two bursts."""
    netns = fabric.add_workload_netns(1, "bclient")
    meter = CpuMeter(functools.partial(fabric_pids, fabric))
    peer = Peer(fabric)
    peer_every = max(1, config.sequential // PEER_TRIALS)
    async with fabric.in_process_clients(1, netns, "bench-client") as clients:
        for i in range(config.sequential):
            if deadline.expired():
                break
            meter.start()  # CPU of the setup, then of its close, not of the peer's trials
            client, seconds = await clients.connect(SETUP_SERVICE, f"seq{i}")
            await asyncio.sleep(SETTLE)  # work done after the reply counts too
            _add(results.sequential_cpu, meter.stop())
            results.sequential.append(seconds)
            meter.start()
            await clients.close(client)
            await asyncio.sleep(SETTLE)
            _add(results.close_cpu, meter.stop())
            if i % peer_every == 0 and peer.trials < PEER_TRIALS:
                seconds, cpu = await peer.trial()  # under the same load as the setups
                results.peer.append(seconds)
                results.peer_cpu.append(cpu)
        if deadline.expired():
            return
        results.memory[0] = await memory_at_rest(fabric)
        start = time.monotonic()
        results.concurrent = await _burst(clients, "con", config.concurrent, results)
        results.concurrent_wall = time.monotonic() - start
        results.burst_end_memory[config.concurrent] = memory_now(fabric)
        results.memory[config.concurrent] = await memory_at_rest(fabric)
        if deadline.expired():
            return
        results.second_burst = await _burst(clients, "cob", config.concurrent, results)
        results.burst_end_memory[2 * config.concurrent] = memory_now(fabric)
        results.memory[2 * config.concurrent] = await memory_at_rest(fabric)
        progress(NAME, f"scaling: {SCALING_ROUNDS} rounds of {config.concurrent} setups one by "
                       "one, then as many at once")
        for round_ in range(SCALING_ROUNDS):
            if deadline.expired():
                return
            results.scaling.append(await measure_scaling(clients, meter, f"r{round_}",
                                                         config.concurrent, results))


async def measure_scaling(clients: InProcessClients, meter: CpuMeter, prefix: str, count: int,
                          results: Results) -> ScalingRound:
    """One :class:`ScalingRound`, each half begun with every connection closed and metered
    until ``SETTLE`` after its last reply."""
    await _close_all(clients)
    meter.start()
    for i in range(count):
        await clients.connect(SETUP_SERVICE, f"{prefix}s{i}")
    await asyncio.sleep(SETTLE)
    serial = meter.stop()
    await _close_all(clients)
    meter.start()
    start, ticks = time.monotonic(), machine_ticks()
    made = await _burst(clients, f"{prefix}b", count, results)
    wall, busy = time.monotonic() - start, busy_share(ticks, machine_ticks())
    await asyncio.sleep(SETTLE)
    return ScalingRound(count, len(made), serial, meter.stop(), wall, busy)


async def _close_all(clients: InProcessClients) -> None:
    for client in list(clients.open):
        await clients.close(client)


async def memory_at_rest(fabric: Fabric) -> dict[str, list[int]]:
    """:func:`memory_now` after ``MEMORY_REST`` seconds without calls."""
    await asyncio.sleep(MEMORY_REST)
    return memory_now(fabric)


def _add(total: dict[str, float], spent: dict[str, float]) -> None:
    for kind, seconds in spent.items():
        total[kind] = total.get(kind, 0.0) + seconds


async def _burst(clients: InProcessClients, prefix: str, count: int,
                 results: Results) -> list[float]:
    """``count`` connections at once; the seconds of those made (failures are counted, with
    the first reason kept, so one lost setup does not end the run)."""
    made = await asyncio.gather(
        *(clients.connect(SETUP_SERVICE, f"{prefix}{i}") for i in range(count)),
        return_exceptions=True,
    )
    for outcome in made:
        if isinstance(outcome, FabricError):
            results.failures += 1
            results.first_failure = results.first_failure or str(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
    return [outcome[1] for outcome in made if isinstance(outcome, tuple)]


# -- the peer: the same remote data plane by hand --------------------------------------------------


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(10):
        _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {err.decode().strip()}")


class RawWireGuardSide:
    """One side of a hand-made tunnel: wireguard-go in ``node``'s namespace, its interface moved
    to ``workload``."""

    def __init__(self, node: Node, workload: str, ifname: str, keydir: Path) -> None:
        self.node, self.workload, self.ifname = node, workload, ifname
        self.private, self.public = generate_keypair()
        self.keyfile = keydir / f"{ifname}.key"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await start_wireguard_go(self.node.netns, self.ifname)

    async def configure(self, peer: RawWireGuardSide, address: str, peer_address: str) -> None:
        self.keyfile.write_text(self.private)
        self.keyfile.chmod(0o600)
        await _run("wg", "set", self.ifname, "listen-port", str(PEER_PORT + self.node.index),
                   "private-key", str(self.keyfile), "peer", peer.public,
                   "endpoint", f"{peer.node.underlay_ip}:{PEER_PORT + peer.node.index}",
                   "allowed-ips", f"{peer_address}/32")
        await _run("ip", "-n", self.node.netns, "link", "set", self.ifname, "netns",
                   self.workload)
        await _run("ip", "-n", self.workload, "addr", "add", f"{address}/32", "peer",
                   f"{peer_address}/32", "dev", self.ifname)
        await _run("ip", "-n", self.workload, "link", "set", self.ifname, "mtu", "1420", "up")

    async def stop(self) -> None:
        self.keyfile.unlink(missing_ok=True)
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()


class Peer:
    """Hand-made wireguard-go tunnels n1 <-> n2, timed like a vWire setup, then removed."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.workloads = (fabric.add_workload_netns(1, "pclient"),
                          fabric.add_workload_netns(2, "pserver"))
        self.tag = os.getpid() % 100000
        self.trials = 0

    async def trial(self) -> tuple[float, float]:
        """One tunnel made by hand and removed; the seconds it took to make and the CPU seconds
        its processes used (made, up and removed, as a vWire's setup and close are metered)."""
        before = _children_cpu()
        seconds = await self._trial()
        return seconds, _children_cpu() - before

    async def _trial(self) -> float:
        i, state = self.trials, self.fabric.topology.state_dir
        self.trials += 1
        a = RawWireGuardSide(self.fabric.node(1), self.workloads[0], f"wbp{self.tag}{i:03d}a",
                             state)
        b = RawWireGuardSide(self.fabric.node(2), self.workloads[1], f"wbp{self.tag}{i:03d}b",
                             state)
        try:
            start = time.monotonic()
            for side, peer, mine, theirs in ((b, a, "10.71.0.1", "10.71.0.2"),
                                             (a, b, "10.71.0.2", "10.71.0.1")):
                await side.start()
                await side.configure(peer, mine, theirs)
            return time.monotonic() - start
        finally:
            await a.stop()
            await b.stop()


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the peer's wireguard-go, wg and ip; the
    fabric's processes end only after the setup phase)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- heal trials ---------------------------------------------------------------------------------


async def measure_heals(fabric: Fabric, config: Config, results: Results,
                        deadline: Deadline) -> None:
    """Endpoint deaths, then forwarder restarts, on a reference client process."""
    client: Client = await fabric.add_client("nsc", 1, [f"kernel://{SERVICE}/nsm0"])
    for _ in range(config.heal_trials):
        if deadline.expired():
            return
        victim = client.connection()["network_service_endpoint_name"]
        heal = await measure_heal(client, functools.partial(fabric.kill, victim))
        results.endpoint_heals.append(heal.seconds)
    forwarder = fabric.node(1).forwarder_process

    def restart() -> None:
        fabric.kill(forwarder)
        fabric.processes.restart(forwarder)

    for _ in range(config.heal_trials):
        if deadline.expired():
            return
        heal = await measure_heal(client, restart)
        results.forwarder_heals.append(heal.seconds)
        await fabric.wait_ready(forwarder)


# -- driver --------------------------------------------------------------------------------------


async def measure(config: Config, topology: Topology) -> Results:
    results = Results()
    deadline = Deadline(config.max_seconds)
    with running(NAME, Fabric(topology, 3, log_level="warning")) as fabric:
        progress(NAME, "starting a 3-node fabric (registry, nsmgrs, forwarders)")
        await fabric.up()
        progress(NAME, f"starting {config.heal_trials + 2} endpoints")
        await fabric.add_endpoint("nse-setup", [SETUP_SERVICE], 2, cidrs=SETUP_CIDRS)
        for i in range(config.heal_trials + 1):  # one to start on, one more per death
            await fabric.add_endpoint(f"nse-{i}", [SERVICE], 2 + i % 2)
        progress(NAME, f"connection setup: {config.sequential} one by one (with "
                       f"{PEER_TRIALS} hand-made tunnels in between), {config.concurrent} at "
                       "once, twice")
        await measure_setup(fabric, config, results, deadline)
        progress(NAME, f"heals: {config.heal_trials} endpoint deaths, then restarts")
        await measure_heals(fabric, config, results, deadline)
    return results


def _dist(name: str, samples: Sequence[float], p50_goal: float | None = None,
          p99_goal: float | None = None, max_goal: float | None = None) -> list[Metric]:
    if not samples:
        return [Metric(f"{name}_p50", float("nan"), "ms", p50_goal)]
    out = [Metric(f"{name}_p50", ms(percentile(samples, 50)), "ms", p50_goal),
           Metric(f"{name}_p99", ms(percentile(samples, 99)), "ms", p99_goal)]
    if max_goal is not None:
        out.append(Metric(f"{name}_max", ms(max(samples)), "ms", max_goal))
    return out


def metrics_of(results: Results) -> list[Metric]:
    out = [
        *_dist("setup_sequential", results.sequential, SETUP_P50_GOAL_MS, SETUP_P99_GOAL_MS),
        *_dist("setup_concurrent", results.concurrent, p99_goal=CONCURRENT_P99_GOAL_MS),
        Metric("setup_concurrent_wall", ms(results.concurrent_wall), "ms"),
        *_dist("setup_concurrent_second_burst", results.second_burst),
        *_dist("raw_wireguard_go_setup", results.peer),
    ]
    if results.sequential and results.peer:
        out.append(Metric("setup_p50_vs_raw_wireguard_go",
                          round(percentile(results.sequential, 50) / percentile(results.peer, 50),
                                2), "x", PEER_RATIO_GOAL))
    out.append(Metric("setup_concurrent_failures", results.failures, "", 1))
    out += cost_metrics(results)
    out += _dist("heal_endpoint_death", results.endpoint_heals, max_goal=ENDPOINT_HEAL_GOAL_MS)
    out += _dist("heal_forwarder_restart", results.forwarder_heals,
                 max_goal=FORWARDER_HEAL_GOAL_MS)
    return out


def _per_kind(name: str, spent: dict[str, float], count: int) -> list[Metric]:
    """``name``_<kind>: the CPU each kind of process ("wireguard-go", "nsmgr") spent per call."""
    return [Metric(f"{name}_{kind.replace(' ', '_').replace('-', '_')}", ms(seconds / count), "ms")
            for kind, seconds in sorted(spent.items())]


def cost_metrics(results: Results) -> list[Metric]:
    """CPU per setup, the burst's scaling efficiency and memory at 0, one and two bursts."""
    out: list[Metric] = []
    count = len(results.sequential)
    cpu = sum(results.sequential_cpu.values()) / count if count else 0.0
    close = sum(results.close_cpu.values()) / count if count else 0.0
    if cpu:
        out.append(Metric("cpu_per_setup_sequential", ms(cpu), "ms", CPU_PER_SETUP_GOAL_MS))
        out.append(Metric("cpu_per_close_sequential", ms(close), "ms"))
        out.append(Metric("cpu_per_setup_and_close_sequential", ms(cpu + close), "ms"))
        if results.peer_cpu:
            peer = sum(results.peer_cpu) / len(results.peer_cpu)
            out.append(Metric("raw_wireguard_go_cpu_per_setup_and_close", ms(peer), "ms"))
            if peer:
                out.append(Metric("cpu_per_setup_and_close_vs_raw_wireguard_go",
                                  round((cpu + close) / peer, 2), "x"))
        out += _per_kind("cpu_per_setup_sequential", results.sequential_cpu, count)
        out += _per_kind("cpu_per_close_sequential", results.close_cpu, count)
    out += burst_metrics(results, cpu)
    for live, memory in sorted(results.memory.items()):
        for node in ("n1", "n2"):
            goal = CONTROL_RSS_GOAL_MB if live >= 100 else None
            out.append(Metric(f"control_plane_rss_{node}_at_{live}", _mb(memory[node][0]), "MB",
                              goal))
            if live in results.burst_end_memory:
                out.append(Metric(f"control_plane_rss_{node}_at_{live}_burst_end",
                                  _mb(results.burst_end_memory[live][node][0]), "MB"))
        daemons = memory["wireguard-go"]
        out.append(Metric(f"wireguard_go_daemons_at_{live}", len(daemons) // 2, ""))
        if daemons:
            count = len(daemons) // 2
            out.append(Metric(f"wireguard_go_rss_per_device_at_{live}",
                              _mb(sum(daemons[0::2]) / count), "MB"))
            out.append(Metric(f"wireguard_go_pss_per_device_at_{live}",
                              _mb(sum(daemons[1::2]) / count), "MB"))
    return out


def burst_metrics(results: Results, sequential_cpu: float) -> list[Metric]:
    """CPU per setup of the scaling rounds' bursts and serial setups, and the median round's
    scaling efficiency (goal), the worst round's, and the median against the sequential setups'
    CPU (stricter: those may take a closed connection's kept daemon, a burst's cannot)."""
    rounds = [round_ for round_ in results.scaling if round_.made and round_.wall]
    if not rounds:
        return []
    serial, made = sum(r.count for r in rounds), sum(r.made for r in rounds)
    serial_cpu: dict[str, float] = {}
    burst_cpu: dict[str, float] = {}
    for round_ in rounds:
        _add(serial_cpu, round_.serial_cpu)
        _add(burst_cpu, round_.burst_cpu)
    efficiency = sorted(round_.efficiency() for round_ in rounds)
    out = [Metric("cpu_per_setup_concurrent", ms(sum(burst_cpu.values()) / made), "ms"),
           *_per_kind("cpu_per_setup_concurrent", burst_cpu, made),
           Metric("cpu_per_setup_serial", ms(sum(serial_cpu.values()) / serial), "ms"),
           *_per_kind("cpu_per_setup_serial", serial_cpu, serial),
           Metric("setup_concurrent_cores_busy",
                  round(100 * statistics.median(r.busy for r in rounds), 1), "%"),
           Metric("concurrent_scaling_efficiency", round(statistics.median(efficiency), 3), "",
                  SCALING_GOAL, higher_is_better=True),
           Metric("concurrent_scaling_efficiency_worst", round(efficiency[0], 3), "")]
    if sequential_cpu:
        out.append(Metric("concurrent_scaling_vs_sequential", round(statistics.median(
            round_.efficiency(sequential_cpu) for round_ in rounds), 3), ""))
    return out


def _mb(value: float) -> float:
    return round(value / 1e6, 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.connect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Config()
    parser.add_argument("--sequential", type=int, default=defaults.sequential)
    parser.add_argument("--concurrent", type=int, default=defaults.concurrent)
    parser.add_argument("--heal-trials", type=int, default=defaults.heal_trials)
    parser.add_argument("--wireguard-pool", type=int, default=defaults.wireguard_pool,
                        help="the forwarders' VWIRE_FORWARDER_WIREGUARD_POOL (daemons started "
                             "ahead per underlay; 0: none)")
    parser.add_argument("--wireguard-pool-endpoints", type=int,
                        default=defaults.wireguard_pool_endpoints,
                        help="the forwarders' VWIRE_FORWARDER_WIREGUARD_POOL_ENDPOINTS (endpoint "
                             "namespaces --wireguard-pool daemons are also kept ready in)")
    parser.add_argument("--wireguard-reuse", type=int, default=defaults.wireguard_reuse,
                        help="the forwarders' VWIRE_FORWARDER_WIREGUARD_REUSE (daemons of closed "
                             "endpoint-side vWires kept for the next; 0: none)")
    parser.add_argument("--no-prepare-ahead", dest="prepare_ahead", action="store_false",
                        help="the forwarders' VWIRE_FORWARDER_PREPARE_AHEAD=false (a tunnel is "
                             "made only once the request's answer came)")
    parser.add_argument("--wireguard-device", choices=WIREGUARD_DEVICES,
                        default=defaults.wireguard_device,
                        help="the forwarders' VWIRE_FORWARDER_WIREGUARD_DEVICE (shared: one "
                             "wireguard-go per node pair and address space)")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help="wall-clock budget; phases stop early when it runs out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    json_output = args.pop("json")
    config = Config(**args)
    if min(config.sequential, config.concurrent, config.heal_trials) < 1:
        parser.error("--sequential, --concurrent and --heal-trials must be at least 1")
    if config.concurrent > 64:
        parser.error("--concurrent must be at most 64 (one channel, bounded in-flight calls)")
    require_root(parser)
    if min(config.wireguard_pool, config.wireguard_pool_endpoints, config.wireguard_reuse) < 0:
        parser.error("--wireguard-pool, --wireguard-pool-endpoints and --wireguard-reuse must "
                     "be 0 or more")
    os.environ["VWIRE_FORWARDER_WIREGUARD_POOL"] = str(config.wireguard_pool)  # the forwarders'
    os.environ["VWIRE_FORWARDER_PREPARE_AHEAD"] = str(config.prepare_ahead).lower()
    os.environ["VWIRE_FORWARDER_WIREGUARD_POOL_ENDPOINTS"] = str(config.wireguard_pool_endpoints)
    os.environ["VWIRE_FORWARDER_WIREGUARD_DEVICE"] = config.wireguard_device
    os.environ["VWIRE_FORWARDER_WIREGUARD_REUSE"] = str(config.wireguard_reuse)
    log.configure("warning", json=True)
    pid = os.getpid()
    topology = Topology(f"vwb{pid}-", Path(f"/var/run/vwire-bench/{pid}"))
    results = asyncio.run(measure(config, topology))
    info = {**asdict(config), "nodes": 3, "samples_sequential": len(results.sequential),
            "samples_peer": len(results.peer), "wireguard": "wireguard-go (userspace)",
            "first_concurrent_failure": results.first_failure,
            "heal_endpoint_death_ms": [ms(s) for s in results.endpoint_heals],
            "heal_forwarder_restart_ms": [ms(s) for s in results.forwarder_heals]}
    print(report(metrics_of(results), info, json_output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
