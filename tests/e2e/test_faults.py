"""Fault matrix (issue 18), registry and store rows: real processes in their own namespaces.

Each test builds a fabric with a live connection, takes a snapshot of what it holds
(:mod:`tests.leaks`), injects the fault with SIGKILL, measures the heal, checks that the
connection passes traffic and that nothing was lost, and compares what the fabric holds
afterwards with the snapshot (nothing leaked). Rows of the issue's table covered elsewhere:
endpoint killed with another candidate and forwarder killed on either node
(``tests/e2e/test_heal.py``).

- registry replica killed (etcd, two replicas): a client on both replicas (``Replicas``)
  registers at once through the survivor and its watch resumes there, delivering the new record
  once and nothing twice; the killed replica comes back with every record.
- SQLite registry restarted: every record is there again at once (read from the file), the
  watch goes on (it lists again: a SQLite registry does not number changes).
- etcd leader killed, then one member lost for good: registrations succeed without an error
  (the registry retries inside), nothing stored is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab.fabric import Client, Fabric
from lab.observe import endpoint_address, ping
from sdk.grpcutil import channel
from sdk.registry.core import Event, Query, RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.registry.replicas import Replicas
from tests.e2e.conftest import MakeFabric
from tests.leaks import holdings, leaked, records

HEAL_GOAL = 2.0  # seconds from the kill to a registration answered and seen by a watch
WAIT = 10.0


def probe(name: str) -> NetworkServiceEndpoint:
    record = NetworkServiceEndpoint(name=name, network_service_names=["probe"],
                                    url="tcp://192.0.2.1:5001")
    record.expiration_time.FromSeconds(int(time.time()) + 600)
    return record


async def fabric_with_connection(
    make_fabric: MakeFabric, registry_store: str
) -> tuple[Fabric, Client]:
    fabric = await make_fabric(nodes=2, registry_store=registry_store)
    await fabric.add_endpoint("nse-a", ["db"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"])
    return fabric, client


async def passes_traffic(client: Client) -> bool:
    return await ping(client.netns, endpoint_address(client.connection()))


async def registry_client(
    stack: AsyncExitStack, fabric: Fabric
) -> RegistryChain[NetworkServiceEndpoint]:
    """A client of every registry replica of ``fabric`` (failover, watch resume)."""
    channels = [await stack.enter_async_context(channel(f"unix://{path}"))
                for path in fabric.registries.values()]
    return RegistryChain([Replicas(ENDPOINT, channels)])


async def next_named(events: AsyncIterator[Event[NetworkServiceEndpoint]]) -> tuple[str, bool]:
    async with asyncio.timeout(WAIT):
        event = await anext(events)
    return event.record.name, event.deleted


async def test_registry_replica_killed_loses_nothing_and_the_watch_resumes(
    make_fabric: MakeFabric, record_property: pytest.RecordProperty
) -> None:
    fabric, client = await fabric_with_connection(make_fabric, "etcd")
    before = await holdings(fabric)
    async with AsyncExitStack() as stack:
        registry = await registry_client(stack, fabric)
        watch = registry.find(Query(NetworkServiceEndpoint(network_service_names=["probe"]),
                                    watch=True))
        stack.push_async_callback(watch.aclose)
        await registry.register(probe("probe-1"))
        assert await next_named(watch) == ("probe-1", False)

        start = time.monotonic()
        fabric.kill("registry")  # the replica the client (and every nsmgr) uses first
        await registry.register(probe("probe-2"))
        assert await next_named(watch) == ("probe-2", False)  # resumed: probe-1 not repeated
        heal = time.monotonic() - start
        print(f"registry replica killed: registration and watch healed in {heal * 1000:.0f} ms")
        record_property("registry_replica_heal_seconds", heal)
        assert heal < HEAL_GOAL, f"took {heal:.3f} s"

        assert await records(fabric) == ("nse-a", "probe-1", "probe-2")  # from registry-2
        assert await passes_traffic(client)
        await fabric.restart("registry")
        fabric.kill("registry-2")
        assert await records(fabric) == ("nse-a", "probe-1", "probe-2")  # the restarted one
        await fabric.restart("registry-2")
        for name in ("probe-1", "probe-2"):
            await registry.unregister(probe(name))
        assert [await next_named(watch) for _ in range(2)] == [
            ("probe-1", True), ("probe-2", True)
        ]
    assert leaked(before, await holdings(fabric)) == []


async def test_sqlite_registry_restarted_keeps_every_registration(
    make_fabric: MakeFabric, record_property: pytest.RecordProperty
) -> None:
    fabric, client = await fabric_with_connection(make_fabric, "sqlite")
    before = await holdings(fabric)
    async with AsyncExitStack() as stack:
        registry = await registry_client(stack, fabric)
        watch = registry.find(Query(NetworkServiceEndpoint(network_service_names=["probe"]),
                                    watch=True))
        stack.push_async_callback(watch.aclose)
        await registry.register(probe("probe-1"))
        assert await next_named(watch) == ("probe-1", False)

        start = time.monotonic()
        fabric.kill("registry")
        await fabric.restart("registry")
        assert await records(fabric) == ("nse-a", "probe-1")  # read back from the file
        heal = time.monotonic() - start
        print(f"SQLite registry restarted: serving every record again in {heal * 1000:.0f} ms")
        record_property("sqlite_registry_restart_seconds", heal)
        # The watch goes on: it lists again (probe-1 once more), then sees new changes.
        assert await next_named(watch) == ("probe-1", False)
        await registry.register(probe("probe-2"))
        assert await next_named(watch) == ("probe-2", False)
        assert await passes_traffic(client)
        for name in ("probe-1", "probe-2"):
            await registry.unregister(probe(name))
    assert leaked(before, await holdings(fabric)) == []


async def test_etcd_leader_killed_then_a_member_lost_no_error_no_loss(
    make_fabric: MakeFabric, record_property: pytest.RecordProperty
) -> None:
    fabric, client = await fabric_with_connection(make_fabric, "etcd")
    assert fabric.etcd is not None
    before = await holdings(fabric)
    async with AsyncExitStack() as stack:
        registry = await registry_client(stack, fabric)
        await registry.register(probe("probe-1"))

        leader = await fabric.etcd.leader()
        start = time.monotonic()
        fabric.kill(f"etcd-{leader.name}")
        await registry.register(probe("probe-2"))  # during the election: retried inside
        heal = time.monotonic() - start
        print(f"etcd leader killed: a registration answered after {heal * 1000:.0f} ms")
        record_property("etcd_leader_heal_seconds", heal)
        assert heal < HEAL_GOAL * 2, f"took {heal:.3f} s"
        assert await records(fabric) == ("nse-a", "probe-1", "probe-2")

        await fabric.restart(f"etcd-{leader.name}")
        lost = next(m for m in fabric.etcd.nodes if m is not leader)
        fabric.kill(f"etcd-{lost.name}")  # one member gone for good: two of three remain
        await registry.register(probe("probe-3"))
        assert await records(fabric) == ("nse-a", "probe-1", "probe-2", "probe-3")
        assert await passes_traffic(client)
        for name in ("probe-1", "probe-2", "probe-3"):
            await registry.unregister(probe(name))
    assert leaked(before, await holdings(fabric)) == []
