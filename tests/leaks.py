"""What a fabric holds, to compare before a fault and after it healed (fault tests, soak).

:func:`holdings` counts, in every namespace of the fabric, the links, addresses, routes (all
tables) and listening TCP/UDP sockets, plus the wireguard-go processes and the endpoint records
a live registry replica holds. :func:`leaked` lists what grew (or, for records, what differs):
an empty list means nothing leaked. Counts, not names, are compared for kernel objects, since a
healed connection may be rebuilt under new interface names. A link named after a live
wireguard-go daemon is not counted: it is the "shadow" of a tunnel made in its workload's
namespace (docs/dataplane.md), part of a live vWire, whose first build may have moved its tunnel
instead (an endpoint's namespace is known only from its first answer); the shadow of a daemon
that is gone is counted.

Daemons a forwarder keeps after their vWires closed (or starts ahead), and their links, marked
``vwire-pool:``, are not leaks but a cache bounded in number and time: they are counted apart
(``kept``), and :func:`leaked` reports only more of them than the forwarders may keep
(``VWIRE_FORWARDER_WIREGUARD_REUSE`` each).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from api.proto.registry_pb2 import NetworkServiceEndpoint
from forwarder.settings import PREFIX, ForwarderSettings
from lab import network
from lab.fabric import Fabric
from lab.observe import wait_for
from sdk import settings
from sdk.errors import FabricError
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import ENDPOINT


@dataclass(frozen=True)
class Holdings:
    """Per namespace counts, wireguard-go processes and registry endpoint names."""

    links: dict[str, int]
    addresses: dict[str, int]
    routes: dict[str, int]
    sockets: dict[str, int]
    wireguard: int
    records: tuple[str, ...]
    kept: int = 0  #: kept (or pooled) daemons, not in ``wireguard``
    kept_limit: int = 0  #: how many the forwarders may keep
    #: Link names per namespace, to say which ones are left over (not compared).
    link_names: dict[str, list[str]] = field(default_factory=dict, compare=False)


def _count(netns: str, *args: str) -> int:
    return len([line for line in network.ip(*args, netns=netns).splitlines() if line.strip()])


async def _sockets(netns: str) -> int:
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "ss", "-Hlntu",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(10):
        out, _ = await process.communicate()
    return len([line for line in out.decode().splitlines() if line.strip()])


async def records(fabric: Fabric, within: float = 10.0) -> tuple[str, ...]:
    """Names of the endpoint records of the first registry replica that runs and answers
    (asked again, bounded by ``within``, while none does: one may have just been restarted)."""
    found: list[tuple[str, ...]] = []

    async def answered() -> bool:
        for process, path in fabric.registries.items():
            if fabric.processes.pid_of(process) is None:
                continue
            with contextlib.suppress(FabricError, TimeoutError):
                found[:] = [await _names(path)]
                return True
        return False

    await wait_for("a registry replica answering", answered, within, every=0.2)
    return found[0]


async def _names(path: Path) -> tuple[str, ...]:
    # A channel of its own subchannels: gRPC's shared pool would hand it a subchannel of an
    # earlier channel to a replica that was killed, still backing off, and fail at once.
    async with grpc.aio.insecure_channel(
        f"unix://{path}", options=[("grpc.use_local_subchannel_pool", 1)]
    ) as ch:
        chain: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
            [RemoteRegistry(ENDPOINT, ch)]
        )
        async with asyncio.timeout(5):
            found = [e.record.name async for e in chain.find(Query(NetworkServiceEndpoint()))]
    return tuple(sorted(found))


async def holdings(fabric: Fabric) -> Holdings:
    """A snapshot of what ``fabric`` holds now (see the module docstring)."""
    spaces = network.namespaces(fabric.topology)
    daemons = set(fabric.wireguard_processes().values())
    seen = {ns: _links(ns) for ns in spaces}
    pooled = {name for links in seen.values() for name, mark in links if mark}
    names = {ns: [name for name, mark in seen[ns] if not mark] for ns in spaces}
    reuse = settings.load(ForwarderSettings, PREFIX).wireguard_reuse  # the lab's forwarders'
    return Holdings(
        links={ns: len([n for n in names[ns] if n not in daemons]) for ns in spaces},
        addresses={ns: _count(ns, "-o", "addr", "show") for ns in spaces},
        routes={ns: _count(ns, "route", "show", "table", "all") for ns in spaces},
        sockets={ns: await _sockets(ns) for ns in spaces},
        wireguard=len(daemons - pooled),
        records=await records(fabric),
        link_names=names,
        kept=len(daemons & pooled),
        kept_limit=reuse * len(fabric.nodes),
    )


def _links(netns: str) -> list[tuple[str, bool]]:
    """(name, marked ``vwire-pool:``) of every link of ``netns``."""
    lines = network.ip("-o", "link", "show", netns=netns).splitlines()
    return [(line.split(":")[1].strip().split("@")[0], "alias vwire-pool:" in line)
            for line in lines if line.count(":") > 1]


def leaked(before: Holdings, after: Holdings) -> list[str]:
    """What ``after`` holds beyond ``before`` (empty: nothing leaked)."""
    found = []
    for kind in ("links", "addresses", "routes", "sockets"):
        was, now = getattr(before, kind), getattr(after, kind)
        for ns in sorted(set(was) | set(now)):
            if now.get(ns, 0) > was.get(ns, 0):
                names = f" {after.link_names.get(ns)}" if kind == "links" else ""
                found.append(f"{kind} in {ns}: {was.get(ns, 0)} -> {now.get(ns, 0)}{names}")
    if after.wireguard > before.wireguard:
        found.append(f"wireguard-go processes: {before.wireguard} -> {after.wireguard}")
    if after.kept > after.kept_limit:
        found.append(f"kept wireguard-go processes: {after.kept}, more than the forwarders' "
                     f"{after.kept_limit}")
    if after.records != before.records:
        found.append(f"registry endpoints: {before.records} -> {after.records}")
    return found
