"""Connection negotiation end to end over real gRPC, with fake kernels (fast, unprivileged)."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from api.proto.connection_pb2 import Connection
from api.proto.registry_pb2 import Destination, Match, NetworkService
from nsc.client import VWireClient
from sdk.errors import NotFound, PermissionDenied
from tests.integration.fabric import Fabric, FakeNode, temporary_fabric

WAIT = 10.0


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwn-") as fab:
        yield fab


async def changes(client: VWireClient, done: Callable[[], Awaitable[bool]]) -> None:
    """Wait (bounded) until ``done()`` holds; re-check whenever the client's connection changes."""
    changed = asyncio.Event()
    client.on_change = lambda _conn: changed.set()
    async with asyncio.timeout(WAIT):
        while not await done():
            await changed.wait()
            changed.clear()


def hops(conn: Connection) -> list[str]:
    return [segment.name for segment in conn.path.path_segments]


async def links(node: FakeNode, netns: str) -> list[str]:
    return [link.name for link in await node.kernel.list_links(netns, alias_prefix="vwire:")]


async def test_local_connection_is_a_veth_cross_connect(fabric: Fabric) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-a")
    client = fabric.client(node, "c1")
    conn = await client.connect()
    assert conn.network_service_endpoint_name == "nse-a"
    assert hops(conn) == ["c1", "nsmgr-n1", "forwarder-n1", "nse-a"]
    assert conn.mechanism.type == "KERNEL" and conn.mechanism.parameters["name"] == "nsm0"
    assert list(conn.context.ip_context.src_ip_addrs) == ["10.60.0.2/32", "fd00:60::2/128"]
    assert conn.context.MTU == 1500
    assert await links(node, client.mechanism.netns_url) == ["nsm0"]
    assert len(await links(node, "/var/run/netns/n1-nse-a")) == 1
    await client.close()
    assert await links(node, client.mechanism.netns_url) == []
    assert await links(node, "/var/run/netns/n1-nse-a") == []


async def test_remote_connection_is_a_wireguard_tunnel_closed_on_both_nodes(fabric: Fabric) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n2, "nse-b")
    client = fabric.client(n1, "c1")
    conn = await client.connect()
    assert hops(conn) == [
        "c1", "nsmgr-n1", "forwarder-n1", "nsmgr-n2", "forwarder-n2", "nse-b",
    ]
    assert conn.context.MTU == 1500 - 60
    forwarder_segment = conn.path.path_segments[2]
    assert forwarder_segment.metrics["mtu"] == "1440"
    assert "wireguard_last_handshake_age_seconds" in forwarder_segment.metrics
    assert await links(n1, client.mechanism.netns_url) == ["nsm0"]
    assert len(await links(n2, "/var/run/netns/n2-nse-b")) == 1
    assert n1.nsmgr is not None and n2.nsmgr is not None
    assert len(n1.nsmgr.monitor.connections) == 1  # one pass: the forwarder dials n2 itself
    await client.close()
    assert await links(n1, client.mechanism.netns_url) == []
    assert await links(n2, "/var/run/netns/n2-nse-b") == []
    assert n1.nsmgr.monitor.connections == {} and n2.nsmgr.monitor.connections == {}


async def test_unknown_service_is_not_found_by_name(fabric: Fabric) -> None:
    await fabric.start(1)
    with pytest.raises(NotFound, match="'no-such-service'"):
        await fabric.client(fabric.nodes[0], "c1", service="no-such-service").connect()
    assert await links(fabric.nodes[0], "/var/run/netns/n1-c1") == []


async def test_refresh_keeps_the_connection_past_several_lifetimes() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwn-") as root:
        fab = Fabric(Path(root), lifetime=0.6)
        try:
            await fab.start(2)
            n1, n2 = fab.nodes
            endpoint = await fab.endpoint(n2, "nse-r")
            client = fab.client(n1, "c1", keep=True)
            first = await client.connect()
            keeper = asyncio.create_task(client.run())
            versions: list[Connection] = []

            async def six_refreshes() -> bool:  # a refresh every lifetime/3: > 2 lifetimes
                if client.connection is not None and client.connection not in versions[-1:]:
                    versions.append(client.connection)
                return len(versions) > 6

            await changes(client, six_refreshes)
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            assert {v.id for v in versions} == {first.id}
            assert client.heals == 0
            assert len(endpoint.monitor.connections) == 1  # never timed out and rebuilt
            assert await links(n1, client.mechanism.netns_url) == ["nsm0"]
        finally:
            await fab.stop()


async def test_reselect_moves_the_connection_to_another_endpoint(fabric: Fabric) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n1, "nse-1")
    await fabric.endpoint(n2, "nse-2")
    client = fabric.client(n1, "c1", keep=True)
    first = await client.connect()
    keeper = asyncio.create_task(client.run())
    try:
        client.heal_now(reselect=True)

        async def healed() -> bool:
            return client.heals > 0

        await changes(client, healed)
        assert client.connection is not None
        assert client.connection.network_service_endpoint_name != (
            first.network_service_endpoint_name
        )
        old = f"/var/run/netns/{'n1' if first.network_service_endpoint_name == 'nse-1' else 'n2'}"
        old_node = n1 if old.endswith("n1") else n2
        assert await links(old_node, f"{old}-{first.network_service_endpoint_name}") == []
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_endpoint_death_heals_to_another_endpoint(fabric: Fabric) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    doomed = await fabric.endpoint(n2, "nse-doomed")
    client = fabric.client(n1, "c1", keep=True)
    await client.connect()
    assert client.connection is not None
    assert client.connection.network_service_endpoint_name == "nse-doomed"
    await fabric.endpoint(n2, "nse-spare")
    keeper = asyncio.create_task(client.run())
    try:
        await doomed.stop()
        fabric.endpoints.remove(doomed)
        async def moved() -> bool:
            return (client.connection is not None
                    and client.connection.network_service_endpoint_name == "nse-spare")

        await changes(client, moved)
        assert await links(n2, "/var/run/netns/n2-nse-doomed") == []
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_weighted_split_follows_destination_weights() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwn-") as root:
        fab = Fabric(Path(root), policy="weighted")
        try:
            await fab.start(1)
            node = fab.nodes[0]
            await fab.registry.services.register(NetworkService(
                name="db", payload="IP",
                matches=[Match(routes=[
                    Destination(destination_selector={"tier": "big"}, weight=90),
                    Destination(destination_selector={"tier": "small"}, weight=10),
                ])],
            ))
            await fab.endpoint(node, "nse-big", labels=("tier=big",))
            await fab.endpoint(node, "nse-small", labels=("tier=small",))
            chosen: Counter[str] = Counter()
            for i in range(100):
                client = fab.client(node, f"w{i}")
                conn = await client.connect()
                chosen[conn.network_service_endpoint_name] += 1
                await client.close()
            assert abs(chosen["nse-big"] - 90) <= 3, chosen
            assert chosen["nse-big"] + chosen["nse-small"] == 100
        finally:
            await fab.stop()


@pytest.mark.parametrize("down_for", [0.0, 0.6], ids=["at-once", "after-failed-heals"])
async def test_forwarder_restart_heals_the_connection(fabric: Fabric, down_for: float) -> None:
    """Whether the forwarder is back before the client's first heal attempt or only after a
    few failed ones, the connection heals and the far side is updated, not duplicated."""
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n2, "nse-b")
    client = fabric.client(n1, "c1", keep=True)
    first = await client.connect()
    keeper = asyncio.create_task(client.run())
    try:
        assert n1.forwarder is not None
        await n1.forwarder.stop()  # removes its vWires, like a crash followed by the start sweep
        assert await links(n1, client.mechanism.netns_url) == []
        await asyncio.sleep(down_for)
        await n1.start_forwarder()

        async def rebuilt() -> bool:
            return client.heals > 0 and await links(n1, client.mechanism.netns_url) == ["nsm0"]

        await changes(client, rebuilt)
        assert client.connection is not None
        assert client.connection.network_service_endpoint_name == "nse-b"
        assert client.connection.path.path_segments[0].id == first.path.path_segments[0].id
        assert len(await links(n2, "/var/run/netns/n2-nse-b")) == 1  # the old side was closed
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_denied_service_request_is_permission_denied_and_programs_nothing() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwn-") as root:
        policy = Path(root) / "policy.yaml"
        policy.write_text(
            "version: 1\nrequests:\n  - rule: ops-only\n    services: [db]\n"
            "    labels: {team: ops}\n"
        )
        fab = Fabric(Path(root), authorization=str(policy))
        try:
            await fab.start(1)
            node = fab.nodes[0]
            await fab.endpoint(node, "nse-a")
            with pytest.raises(PermissionDenied, match="db"):
                await fab.client(node, "web", labels={"team": "web"}).connect()
            assert await links(node, "/var/run/netns/n1-web") == []
            assert await links(node, "/var/run/netns/n1-nse-a") == []
            allowed = await fab.client(node, "ops", labels={"team": "ops"}).connect()
            assert allowed.network_service_endpoint_name == "nse-a"
        finally:
            await fab.stop()
