"""A bounded soak: connections opened, refreshed, healed and closed in a loop while faults are
injected, on a fabric with the registry on etcd (two replicas, three etcd members).

Every cycle opens a second client on node 1 and closes it (SIGTERM, its namespace removed),
then injects one fault in turn — the endpoint the long-lived client uses killed and started
again, node 2's forwarder killed and started again, registry replica 1 killed and started again
— and waits until the long-lived client passes traffic. Its tokens live 15 s, so it refreshes
all along. The other processes (both nsmgrs, node 1's forwarder, registry replica 2, the second
endpoint, the etcd members) run through the whole soak.

It reports, per process, RSS, open descriptors and (server processes, scraped from their
``vwire_process_asyncio_tasks`` metric) asyncio tasks at the start (after three warm-up cycles,
one per kind of fault, once the fabric is steady) and
the end, and fails on growth beyond the tolerances below in a process that ran throughout; the
fabric's links, addresses, routes, sockets, wireguard-go processes and registry records must be
back to the start (:mod:`tests.leaks`) within three token lifetimes of the last cycle (the half
of a connection a killed hop could not close goes when its tokens expire), once the long-lived
client is back on the endpoint it used at the start (the counts are per namespace).

Length: ``VWIRE_SOAK_SECONDS`` (default 60: CI) and at most ``VWIRE_SOAK_CYCLES`` cycles; e.g.
``VWIRE_SOAK_SECONDS=3600 pytest tests/e2e/test_soak.py`` for an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.fabric import Client, Fabric
from lab.observe import endpoint_address, ping, wait_for
from sdk.errors import DeadlineExceeded, FabricError
from tests.e2e.conftest import MakeFabric
from tests.leaks import Holdings, holdings, leaked

SOAK_SECONDS = float(os.environ.get("VWIRE_SOAK_SECONDS", "60"))
MAX_CYCLES = int(os.environ.get("VWIRE_SOAK_CYCLES", "10000"))
#: Growth allowed in a process that ran throughout (allocator and cache warm-up, not leaks).
RSS_TOLERANCE = 0.25  # a quarter more than at the start ...
RSS_SLACK_KIB = 16 * 1024  # ... or 16 MiB, whichever is larger
FDS_TOLERANCE = 4
FD_ROUNDS, FD_SPACING = 3, 1.2  # see _fewest_fds
TASKS_TOLERANCE = 4
HEAL_WAIT = 20.0
TOKEN_LIFETIME = 15.0
SETTLE_WAIT = 3 * TOKEN_LIFETIME
SHORT_ATTEMPTS = 5
WARMUP_CYCLES = 3

SERVERS = ("VWIRE_NSMGR_", "VWIRE_FORWARDER_", "VWIRE_NSE_", "VWIRE_REGISTRY_")


@dataclass(frozen=True)
class Sample:
    """One process at one moment."""

    pid: int
    rss_kib: int
    fds: int
    tasks: int | None


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fd_kinds(pid: int) -> dict[str, int]:
    """What a process's descriptors are, counted by kind (socket, pipe, anon_inode:..., path)."""
    kinds: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                kind = target.split(":")[0] if ":" in target else target
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _metrics_url(fabric: Fabric, name: str) -> str | None:
    url = None
    log = fabric.processes.log(name)
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if '"serving metrics"' in line:
                url = json.loads(line).get("url")  # the last start's
    return url


async def _scrape(url: str, netns: str | None) -> int | None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = await asyncio.to_thread(subprocess.run, [*prefix, "curl", "-s", "--max-time", "5", url],
                                   capture_output=True, text=True, timeout=10, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("vwire_process_asyncio_tasks "):
            return int(float(line.split()[1]))
    return None


async def _tasks(fabric: Fabric, name: str, netns: str | None) -> int | None:
    """The process's asyncio tasks from its metrics (None: it serves none). A process started a
    moment ago may not have logged its new metrics address yet: asked again, bounded."""
    if _metrics_url(fabric, name) is None:
        return None
    found: list[int] = []

    async def scraped() -> bool:
        url = _metrics_url(fabric, name)
        tasks = None if url is None else await _scrape(url, netns)
        found[:] = [] if tasks is None else [tasks]
        return bool(found)

    await wait_for(f"{name}'s metrics", scraped, HEAL_WAIT)
    return found[0]


def _netns_of(fabric: Fabric, name: str) -> str | None:
    for node in fabric.nodes:
        if name in (node.nsmgr_process, node.forwarder_process):
            return node.netns
    endpoint = fabric.endpoints.get(name)
    return endpoint.netns if endpoint else None


async def _fewest_fds(pids: dict[str, int]) -> dict[str, int]:
    """Each process's open descriptors, the fewest of :data:`FD_ROUNDS` counts
    :data:`FD_SPACING` s apart: a forwarder's namespace workers (a thread with its netlink and
    loop descriptors) end after a second idle, so one count can catch a few that are ending;
    a leak stays in every count."""
    fewest: dict[str, int] = {}
    for round_ in range(FD_ROUNDS):
        if round_:
            await asyncio.sleep(FD_SPACING)  # the spacing of the counts, not a synchronisation
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                count = len(os.listdir(f"/proc/{pid}/fd"))
                fewest[name] = min(count, fewest.get(name, count))
    return fewest


async def sample(fabric: Fabric) -> dict[str, Sample]:
    """Every running process of the fabric except clients."""
    pids = {name: pid for name in fabric.processes.recorded()
            if name not in fabric.clients and (pid := fabric.processes.pid_of(name)) is not None}
    fds = await _fewest_fds(pids)
    found = {}
    for name, pid in pids.items():
        try:
            rss = _rss_kib(pid)
        except OSError:
            continue
        if name in fds:
            tasks = await _tasks(fabric, name, _netns_of(fabric, name))
            found[name] = Sample(pid, rss, fds[name], tasks)
    return found


def growth(start: dict[str, Sample], end: dict[str, Sample]) -> tuple[list[str], list[str]]:
    """(the report lines, the leaks) of the processes that ran throughout."""
    lines, leaks = [], []
    for name in sorted(start):
        a, b = start[name], end.get(name)
        if b is None:
            leaks.append(f"{name} is gone")
            continue
        kept = a.pid == b.pid
        lines.append(f"{name:16} rss {a.rss_kib / 1024:6.1f} -> {b.rss_kib / 1024:6.1f} MiB  "
                     f"fds {a.fds:3} -> {b.fds:3}  tasks {a.tasks} -> {b.tasks}"
                     f"{'' if kept else '  (restarted by the soak)'}")
        if not kept:
            continue
        if b.rss_kib > a.rss_kib + max(a.rss_kib * RSS_TOLERANCE, RSS_SLACK_KIB):
            leaks.append(f"{name}: RSS {a.rss_kib} -> {b.rss_kib} KiB")
        if b.fds > a.fds + FDS_TOLERANCE:
            leaks.append(f"{name}: descriptors {a.fds} -> {b.fds} (now {_fd_kinds(b.pid)})")
        if a.tasks is not None and (b.tasks is None or b.tasks > a.tasks + TASKS_TOLERANCE):
            leaks.append(f"{name}: asyncio tasks {a.tasks} -> {b.tasks}")
    return lines, leaks


async def steady(fabric: Fabric) -> Holdings:
    """What the fabric holds once it is steady: both endpoints registered and two snapshots a
    moment apart alike (the last fault's heal and refreshes done)."""
    seen: list[Holdings] = []

    async def still() -> bool:
        seen.append(await holdings(fabric))
        return (len(seen) > 1 and seen[-1] == seen[-2]
                and seen[-1].records == ("nse-a", "nse-b"))

    await wait_for("the fabric steady", still, SETTLE_WAIT, every=1.0)
    return seen[-1]


async def passes(client: Client) -> None:
    async def answered() -> bool:
        conn = client.connection()
        return bool(conn) and await ping(client.netns, endpoint_address(conn), wait=0.5)

    await wait_for(f"{client.process} passing traffic", answered, HEAL_WAIT)


class Soak:
    """The fabric and its cycle (see the module docstring)."""

    def __init__(self, fabric: Fabric, client: Client) -> None:
        self.fabric = fabric
        self.client = client
        self.cycles = 0
        self.refused = 0

    async def short_lived_client(self) -> None:
        """Open a client and close it. A request right after a fault may be refused while the
        endpoints sit out the circuit breaker's back-off; the client is then started again
        (bounded) and the refusal counted."""
        for attempt in range(SHORT_ATTEMPTS):
            try:
                other = await self.fabric.add_client("nsc-short", node=1,
                                                     urls=["kernel://db/nsm0"])
                await passes(other)
                return
            except FabricError:
                self.refused += 1
                if attempt == SHORT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(1.0)  # retry back-off, not a synchronisation
            finally:
                await self.remove_short_lived_client()

    async def remove_short_lived_client(self) -> None:
        client = self.fabric.clients.pop("nsc-short", None)
        if client is not None:
            self.fabric.processes.stop(client.process, grace=10.0)
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "delete", client.netns],
                                    check=True, timeout=30)

    def endpoint(self) -> str:
        """The endpoint the long-lived client's connection goes to now."""
        name: str = self.client.connection()["network_service_endpoint_name"]
        return name

    async def fault(self) -> None:
        fabric = self.fabric
        victim = [self.endpoint(), fabric.node(2).forwarder_process, "registry"][self.cycles % 3]
        await self.kill_and_restart(victim)

    async def kill_and_restart(self, victim: str) -> None:
        self.fabric.kill(victim)
        await self.fabric.restart(victim)
        await passes(self.client)

    async def back_to(self, endpoint: str) -> None:
        """Put the long-lived client back on ``endpoint`` (one more endpoint fault: it heals
        onto the other one), so the namespaces compare like with like: a connection on nse-b
        holds in nse-b's namespace what it held in nse-a's, and the endpoints' pools differ."""
        current = self.endpoint()
        if current == endpoint:
            return
        self.fabric.kill(current)

        async def moved() -> bool:  # before the victim is back: a heal under load may be slower
            return self.endpoint() == endpoint  # than its restart, and would pick it again

        await wait_for(f"{self.client.process} healed onto {endpoint}", moved, HEAL_WAIT)
        await self.fabric.restart(current)
        await passes(self.client)

    async def cycle(self) -> None:
        await self.short_lived_client()
        await self.fault()
        self.cycles += 1


@pytest.mark.timeout(SOAK_SECONDS + 300)  # the soak itself, then building and settling
async def test_soak_leaks_nothing(
    make_fabric: MakeFabric, monkeypatch: pytest.MonkeyPatch,
    record_property: pytest.RecordProperty,
) -> None:
    for prefix in SERVERS:  # every server serves its metrics on a free loopback port
        monkeypatch.setenv(f"{prefix}METRICS_LISTEN", "127.0.0.1:0")
    fabric = await make_fabric(nodes=2, registry_store="etcd", token_lifetime=TOKEN_LIFETIME)
    await fabric.add_endpoint("nse-a", ["db"], node=2)
    await fabric.add_endpoint("nse-b", ["db"], node=2, cidrs=("10.64.0.0/16", "fd00:64::/64"))
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"])
    soak = Soak(fabric, client)
    for _ in range(WARMUP_CYCLES):  # every kind of fault once: lazily made things exist
        await soak.cycle()
    before, start = await steady(fabric), await sample(fabric)
    start_endpoint = soak.endpoint()
    servers = [name for name in start if _metrics_url(fabric, name)]
    assert len(servers) == 8, servers  # 2 registries, 2 nsmgrs, 2 forwarders, 2 endpoints
    assert all(start[name].tasks for name in servers)

    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline and soak.cycles <= MAX_CYCLES:
        await soak.cycle()

    await soak.back_to(start_endpoint)
    leftover: list[str] = []

    async def settled() -> bool:  # the last fault's leftovers may take a moment to go
        nonlocal leftover
        leftover = leaked(before, await holdings(fabric))
        return not leftover  # one clean snapshot answers: a later one could catch a refresh

    with contextlib.suppress(DeadlineExceeded):  # a hop killed mid-change may leave the far
        # side's half of a connection, which it removes when the connection's tokens expire
        await wait_for("the fabric back to what it held at the start", settled, SETTLE_WAIT)
    assert not leftover, "left over after the soak:\n" + "\n".join(leftover)
    lines, leaks = growth(start, await sample(fabric))
    print(f"soak: {soak.cycles} cycles in {SOAK_SECONDS:g} s; new clients refused right after "
          f"a fault and started again: {soak.refused}")
    print("\n".join(lines))
    record_property("soak_cycles", soak.cycles)
    assert soak.cycles >= 2, "the soak ran too few cycles to mean anything"
    assert not leaks, leaks
