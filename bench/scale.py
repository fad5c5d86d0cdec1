"""Scale run: hundreds of live vWires over a 3-node lab, all passing traffic, setup kept flat.

Run (root): ``python -m bench.scale [--connections 500] [--steps 10,100] [--probes 10]
[--batch 8] [--local-share 0.0] [--wireguard-device per-vwire|shared] [--max-seconds 540]
[--json]``.

Builds a 3-node fabric (:class:`lab.fabric.Fabric`, namespaces ``vws<pid>-...``, removed at the
end however the run ends, Ctrl-C included) with one endpoint on n2 and one on n3 (and one on n1
when ``--local-share`` > 0), and one client namespace on n1 whose connections are made by an
in-process :class:`lab.clients.InProcessClients` (unrefreshed; their lifetime outlasts the run).
Remote connections alternate between n2 and n3: each is a WireGuard tunnel, so one
``wireguard-go`` per side (two per connection, ~5 MB resident each); ``--local-share`` makes that
fraction of the connections to the endpoint on n1 instead (a veth pair, no daemon), for a machine
that cannot hold two daemons per connection. ``--wireguard-device shared`` runs the forwarders
with ``VWIRE_FORWARDER_WIREGUARD_DEVICE=shared``: one daemon per node pair and side (the
connections' addresses do not overlap), so four for the run, and a veth per connection.

It ramps up to every step of ``--steps`` and then to ``--connections`` (``--batch`` setups at
once), and at each step measures, with that many connections live:

- **setup p50** of ``--probes`` remote connections made one by one and each closed at once (the
  step's live count stays as it is), and its ratio to the first step's p50 (flat: 1.0);
- **daemons that ended**: how often a forwarder saw a live vWire's ``wireguard-go`` end and
  restarted it, counted by how each ended (the exit report in the forwarders' logs, see
  ``docs/dataplane.md``), and how many vWires the forwarders gave up after that (``vwire lost``:
  rebuilt only by a later request, which the benchmark does not make);
- **memory**: resident size of every process of the fabric (registry, nsmgr and forwarder of
  each node, endpoints) and of all wireguard-go daemons together, and their count; at the end,
  the control plane's growth per connection from the first step, per node, and the daemons'
  resident size per daemon.

Finally a **ping sweep**: every live connection must answer a ping to each of its destination
addresses (``--ping-parallel`` at a time, each ping bounded; a connection gets three tries) —
``passing_traffic`` must equal ``live_connections``. Ramping stops early when only the share of
``--max-seconds`` kept for the last probes and the sweep (2 minutes, or a quarter) is left; the
report says how many connections were live. Before starting it checks that the daemons
fit in the memory available (with ``--local-share`` 0 it refuses a run that would not fit,
naming the largest ``--connections`` that would, or the share of local connections that makes it
fit). Every loop is bounded by its count and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
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
)
from bench.procstat import rss_bytes
from forwarder.settings import WIREGUARD_DEVICES
from lab.clients import InProcessClients
from lab.fabric import Fabric, endpoint_cidrs
from lab.topology import Topology, netns_path
from nsc.client import VWireClient
from sdk import log
from sdk.errors import FabricError

NAME = "bench.scale"
#: Resident memory of one wireguard-go daemon (measured ~5.3 MB) with a margin.
DAEMON_BYTES = 6 * 1024 * 1024
#: Memory kept free for everything else (the fabric's processes, the client, the system).
RESERVE_BYTES = 3 * 1024**3
#: Most remote connections per node pair: the forwarders' tunnel port range holds 1,000.
MAX_CONNECTIONS = 900
FLAT_GOAL = 1.5  # setup p50 at the last step / at the first
PING_TRIES = 3
#: Most of the budget kept for the last probes and the ping sweep (a quarter when it is less).
RESERVE_SECONDS = 120.0


@dataclass
class Config:
    connections: int = 500
    steps: tuple[int, ...] = (10, 100)
    probes: int = 10
    batch: int = 8
    local_share: float = 0.0
    ping_parallel: int = 16
    max_seconds: float = 540.0
    wireguard_device: str = "per-vwire"


@dataclass
class Step:
    live: int
    probes: list[float] = field(default_factory=list)
    #: process name ("n1-nsmgr", ..., "wireguard-go") -> resident bytes
    rss: dict[str, int] = field(default_factory=dict)
    daemons: int = 0


@dataclass
class Results:
    steps: list[Step] = field(default_factory=list)
    ramp_seconds: float = 0.0
    failures: int = 0
    first_failure: str = ""
    live: int = 0
    passing: int = 0
    not_passing: list[str] = field(default_factory=list)
    #: wireguard-go daemons that ended while their vWire was live (the forwarders' logs)
    daemon_exits: int = 0
    #: how they ended (the exit report's reason) -> count
    exit_reasons: dict[str, int] = field(default_factory=dict)
    #: vWires a forwarder gave up after its daemon ended (restore failed or too many restarts)
    lost: int = 0


def steps_of(config: Config) -> list[int]:
    """The live counts measured at: the steps below ``connections``, then ``connections``."""
    return sorted({s for s in config.steps if 0 < s < config.connections} | {config.connections})


def remote_count(config: Config) -> int:
    return config.connections - round(config.connections * config.local_share)


def memory_available() -> int:
    """MemAvailable of /proc/meminfo, bytes."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def daemons_needed(config: Config) -> int:
    """wireguard-go daemons the run starts: two per remote connection, or with shared devices
    two per node pair (n1-n2, n1-n3), the connections' addresses being all different."""
    remote = remote_count(config)
    if config.wireguard_device == "shared":
        return 2 * min(remote, 2)
    return 2 * remote


def fit_problem(config: Config, available: int) -> str:
    """Why the run's daemons do not fit in ``available`` bytes ('' when they do)."""
    need = daemons_needed(config) * DAEMON_BYTES + RESERVE_BYTES
    if need <= available:
        return ""
    if config.wireguard_device == "shared":
        return (f"the run needs ~{need / 1024**3:.1f} GiB but {available / 1024**3:.1f} GiB are "
                "available: free some memory")
    fits = max(0, (available - RESERVE_BYTES) // (2 * DAEMON_BYTES))
    share = 1 - fits / config.connections
    return (f"{config.connections} connections with {remote_count(config)} remote need "
            f"~{need / 1024**3:.1f} GiB (two wireguard-go of ~{DAEMON_BYTES >> 20} MiB each "
            f"per remote one) but {available / 1024**3:.1f} GiB are available: use "
            f"--connections {fits} or --local-share {min(1.0, share + 0.01):.2f}")


# -- the run -------------------------------------------------------------------------------------


class Scale:
    """The live connections of one run and how they are made."""

    def __init__(self, fabric: Fabric, clients: InProcessClients, config: Config,
                 results: Results) -> None:
        self.fabric, self.clients, self.config, self.results = fabric, clients, config, results
        self.live: list[VWireClient] = []
        self.made = 0  # connections attempted, for interface names and the local share

    def _service(self, index: int) -> str:
        """Local for an even spread of ``local_share`` of the indexes, else n2 and n3 in turn."""
        share = self.config.local_share
        locals_so_far = int((index + 1) * share)
        if locals_so_far > int(index * share):
            return "scale-local"
        return f"scale-n{2 + (index - locals_so_far) % 2}"  # the remote ones alternate

    async def _one(self, service: str) -> tuple[VWireClient, float] | None:
        self.made += 1
        try:
            return await self.clients.connect(service, f"s{self.made}")
        except FabricError as exc:
            self.results.failures += 1
            self.results.first_failure = self.results.first_failure or str(exc)
            return None

    async def ramp(self, target: int, deadline: Deadline) -> None:
        """Make connections, ``batch`` at once, until ``target`` are live; stops early while
        the probes and the ping sweep still have their share of the budget."""
        start = time.monotonic()
        attempts = 0
        reserve = min(RESERVE_SECONDS, deadline.seconds / 4)
        while len(self.live) < target and deadline.left() > reserve:
            count = min(self.config.batch, target - len(self.live))
            made = await asyncio.gather(*(self._one(self._service(self.made + i))
                                          for i in range(count)))
            self.live += [m[0] for m in made if m is not None]
            attempts += count
            if attempts > 2 * target:  # bounded: most setups fail, stop ramping
                break
        self.results.ramp_seconds += time.monotonic() - start

    async def probe(self, step: Step, deadline: Deadline) -> None:
        """``probes`` remote setups one by one, each closed at once."""
        for i in range(self.config.probes):
            if deadline.expired():
                return
            made = await self._one(f"scale-n{2 + i % 2}")
            if made is not None:
                step.probes.append(made[1])
                await self.clients.close(made[0])

    def memory(self, step: Step) -> None:
        for name in self.fabric.processes.recorded():
            pid = self.fabric.processes.pid_of(name)
            if pid is not None:
                step.rss[name] = rss_bytes(pid)
        daemons = self.fabric.wireguard_processes()
        step.daemons = len(daemons)
        step.rss["wireguard-go"] = sum(rss_bytes(pid) for pid in daemons)

    async def sweep(self, deadline: Deadline) -> None:
        """Ping over every live connection (bounded in parallel, tries and time)."""
        gate = asyncio.Semaphore(self.config.ping_parallel)

        async def check(client: VWireClient) -> bool:
            async with gate:
                for _ in range(PING_TRIES):
                    if deadline.expired():
                        return False
                    if await client.passes_traffic(wait=1.0):
                        return True
                return False

        passed = await asyncio.gather(*(check(c) for c in self.live))
        self.results.live = len(self.live)
        self.results.passing = sum(passed)
        self.results.not_passing = [c.mechanism.interface
                                    for c, ok in zip(self.live, passed, strict=True) if not ok][:10]


_EXITED = "wireguard-go exited, waiting for its restart"
_LOST = "vwire lost"


def daemon_exits(fabric: Fabric, results: Results) -> None:
    """How many times a forwarder saw a live vWire's wireguard-go end (it restarts it), how
    each ended, and how many vWires it gave up (from the forwarders' logs)."""
    reasons: Counter[str] = Counter()
    for node in fabric.nodes:
        path = fabric.processes.log(node.forwarder_process)
        with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if _EXITED in line:
                    reasons[exit_reason(line)] += 1
                elif _LOST in line:
                    results.lost += 1
    results.daemon_exits = sum(reasons.values())
    results.exit_reasons = dict(reasons.most_common())


def exit_reason(line: str) -> str:
    """The reason in an exit warning's exit report ("?" when it has none)."""
    try:
        detail = json.loads(line).get("detail") or ""
    except ValueError:
        return "?"
    return str(detail).split("; last lines:", 1)[0] or "?"


async def measure(config: Config, topology: Topology) -> Results:
    results = Results()
    deadline = Deadline(config.max_seconds)
    # Tokens and connections outlive the run: nothing refreshes them.
    lifetime = config.max_seconds + 600
    device = ["--wireguard-device", config.wireguard_device]
    with running(NAME, Fabric(topology, 3, log_level="warning", token_lifetime=lifetime,
                              forwarder_args=dict.fromkeys((1, 2, 3), device))) as fabric:
        progress(NAME, "starting a 3-node fabric and its endpoints")
        await fabric.up()
        for node in (2, 3):
            await fabric.add_endpoint(f"nse-n{node}", [f"scale-n{node}"], node,
                                      cidrs=endpoint_cidrs(node))
        if config.local_share:
            await fabric.add_endpoint("nse-n1", ["scale-local"], 1, cidrs=endpoint_cidrs(1))
        netns = fabric.add_workload_netns(1, "sclient")
        clients = InProcessClients(
            fabric.node(1).nsmgr_socket, netns_path(netns), "scale-client",
            request_timeout=30.0, svid_dir=fabric.identity("nsc", "scale-client"),
            nsmgr_id=fabric.nsmgr_id(1), lifetime=lifetime,
        )
        scale = Scale(fabric, clients, config, results)
        try:
            for live in steps_of(config):
                progress(NAME, f"ramping up to {live} live connections")
                await scale.ramp(live, deadline)
                step = Step(len(scale.live))
                progress(NAME, f"{step.live} live: {config.probes} probe setups, memory")
                await scale.probe(step, deadline)
                scale.memory(step)
                results.steps.append(step)
                if deadline.expired():
                    break
            progress(NAME, f"ping sweep over {len(scale.live)} connections")
            await scale.sweep(deadline)
            daemon_exits(fabric, results)
        finally:
            # The fabric's teardown removes every vWire, daemon and namespace at once; closing
            # hundreds of connections one by one first would only slow a Ctrl-C down.
            await clients.pool.close()
    return results


# -- report --------------------------------------------------------------------------------------


def _kind(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower())


def metrics_of(results: Results) -> list[Metric]:
    out = [Metric("live_connections", results.live),
           Metric("passing_traffic", results.passing),
           Metric("not_passing_traffic", results.live - results.passing, "", 1),
           Metric("setup_failures", results.failures, "", 1),
           Metric("wireguard_go_exits_while_live", results.daemon_exits, "", 1),
           Metric("vwires_lost", results.lost, "", 1),
           Metric("ramp_wall", round(results.ramp_seconds, 1), "s")]
    first = next((s for s in results.steps if s.probes), None)
    for step in results.steps:
        if step.probes:
            p50 = percentile(step.probes, 50)
            out.append(Metric(f"setup_p50_at_{step.live}", ms(p50), "ms"))
            if first is not None and step is not first:
                out.append(Metric(f"setup_p50_at_{step.live}_vs_at_{first.live}",
                                  round(p50 / percentile(first.probes, 50), 2), "x",
                                  FLAT_GOAL))
        out.append(Metric(f"wireguard_go_daemons_at_{step.live}", step.daemons))
        for node in (1, 2, 3):  # as bench.connect counts the control plane: nsmgr + forwarder
            control = step.rss.get(f"n{node}-nsmgr", 0) + step.rss.get(f"n{node}-forwarder", 0)
            out.append(Metric(f"control_plane_rss_n{node}_at_{step.live}",
                              round(control / 1e6, 1), "MB"))
        for name, rss in sorted(step.rss.items()):
            out.append(Metric(f"rss_{_kind(name)}_at_{step.live}", round(rss / 1e6, 1), "MB"))
    return out + per_connection(results.steps)


def per_connection(steps: list[Step]) -> list[Metric]:
    """Control-plane growth per connection from the first step to the last, per node, and the
    daemons' resident size per daemon at the last step."""
    if len(steps) < 2 or steps[-1].live <= steps[0].live:
        return []
    first, last = steps[0], steps[-1]
    out = []
    for node in (1, 2, 3):
        grown = sum(last.rss.get(f"n{node}-{p}", 0) - first.rss.get(f"n{node}-{p}", 0)
                    for p in ("nsmgr", "forwarder"))
        out.append(Metric(f"control_plane_rss_per_connection_n{node}",
                          round(grown / (last.live - first.live) / 1e3, 1), "KB"))
    if last.daemons:
        out.append(Metric("wireguard_go_rss_per_daemon",
                          round(last.rss.get("wireguard-go", 0) / last.daemons / 1e6, 2), "MB"))
    return out


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps takes live counts separated by commas, e.g. 10,100 (got {text!r})"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Config()
    parser.add_argument("--connections", type=int, default=defaults.connections,
                        help=f"live connections at the end (1..{MAX_CONNECTIONS})")
    parser.add_argument("--steps", type=_steps, default=defaults.steps,
                        help="live counts measured on the way, comma-separated (default 10,100)")
    parser.add_argument("--probes", type=int, default=defaults.probes,
                        help="setups timed at each step")
    parser.add_argument("--batch", type=int, default=defaults.batch,
                        help="setups at once while ramping (1..64)")
    parser.add_argument("--local-share", type=float, default=defaults.local_share,
                        help="fraction of the connections made to an endpoint on the client's "
                             "node (no wireguard-go), for a machine short of memory")
    parser.add_argument("--ping-parallel", type=int, default=defaults.ping_parallel)
    parser.add_argument("--wireguard-device", choices=WIREGUARD_DEVICES,
                        default=defaults.wireguard_device,
                        help="the forwarders' VWIRE_FORWARDER_WIREGUARD_DEVICE (shared: one "
                             "wireguard-go per node pair and address space)")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help="wall-clock budget; phases stop early when it runs out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def check(config: Config, parser: argparse.ArgumentParser) -> None:
    if not 1 <= config.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be in 1..{MAX_CONNECTIONS} (got {config.connections})")
    if config.probes < 1 or not 1 <= config.batch <= 64 or config.ping_parallel < 1:
        parser.error("--probes and --ping-parallel must be at least 1, --batch in 1..64")
    if not 0.0 <= config.local_share < 1.0:
        parser.error(f"--local-share must be in [0, 1) (got {config.local_share})")
    if problem := fit_problem(config, memory_available()):
        parser.error(problem)
    require_root(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    json_output = args.pop("json")
    config = Config(**args)
    check(config, parser)
    log.configure("warning", json=True)
    pid = os.getpid()
    topology = Topology(f"vws{pid}-", Path(f"/var/run/vwire-bench/s{pid}"))
    results = asyncio.run(measure(config, topology))
    info = {**asdict(config), "nodes": 3, "remote_connections": remote_count(config),
            "first_setup_failure": results.first_failure,
            "wireguard_go_exit_reasons": results.exit_reasons,
            "not_passing": results.not_passing,
            "probes_ms": {s.live: [ms(p) for p in s.probes] for s in results.steps}}
    print(report(metrics_of(results), info, json_output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
