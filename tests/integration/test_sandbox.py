"""The sdk's sandbox (``sdk.testing.sandbox``): the assembled chains — client, node managers,
forwarder stand-ins, endpoints — on real gRPC servers, without kernel or processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.testing import Count, Sandbox, request_for


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as box:
        yield box


def names(conn: Connection) -> list[str]:
    return [segment.name for segment in conn.path.path_segments]


async def test_a_local_connection_passes_each_hop_once(sandbox: Sandbox) -> None:
    n1 = await sandbox.node()
    seen = Count()
    endpoint = await sandbox.endpoint(n1, "nse-a", elements=[seen])
    client = sandbox.client(n1, "web")
    conn = await client.chain.run_request(request_for("sandbox", "c-1"), CallContext())
    assert names(conn) == ["web", "nsmgr-n1", "forwarder-n1", "nse-a"]
    assert conn.mechanism.type == "KERNEL" and conn.network_service_endpoint_name == "nse-a"
    assert conn.context.ip_context.dst_ip_addrs[0].startswith("10.80.")
    assert seen.requests == 1 and len(endpoint.monitor.connections) == 1

    await client.chain.run_close(conn, CallContext())
    assert seen.closes == 1 and not endpoint.monitor.connections
    assert n1.manager is not None and not n1.manager.monitor.connections


async def test_a_remote_connection_crosses_both_node_managers(sandbox: Sandbox) -> None:
    n1, n2 = await sandbox.node(), await sandbox.node()
    await sandbox.endpoint(n2, "nse-b")
    client = sandbox.client(n1)
    conn = await client.chain.run_request(request_for("sandbox", "c-2"), CallContext())
    assert names(conn)[1:] == ["nsmgr-n1", "forwarder-n1", "nsmgr-n2", "forwarder-n2", "nse-b"]
    refreshed = await client.chain.run_request(
        NetworkServiceRequest(connection=conn, mechanism_preferences=[
            request_for("sandbox", "c-2").mechanism_preferences[0]]), CallContext())
    assert [s.id for s in refreshed.path.path_segments] == [s.id for s in conn.path.path_segments]
    await client.chain.run_close(refreshed, CallContext())
    assert all(n.manager is not None and not n.manager.monitor.connections for n in (n1, n2))


async def test_a_kept_connection_heals_onto_another_endpoint(sandbox: Sandbox) -> None:
    n1, n2 = await sandbox.node(), await sandbox.node()
    await sandbox.endpoint(n1, "nse-1")
    await sandbox.endpoint(n2, "nse-2")
    versions: asyncio.Queue[Connection] = asyncio.Queue()
    client = sandbox.client(n1, keep=True, on_change=versions.put_nowait)
    first = await client.chain.run_request(request_for("sandbox", "c-3"), CallContext())
    events = client.begin.connections["c-3"]
    assert client.heal is not None and await versions.get() == first
    client.heal.heal_now("c-3", reselect=True)
    async with asyncio.timeout(5):
        healed = await versions.get()
    assert events.heals == 1 and healed == events.connection
    assert events.connection is not None
    assert events.connection.network_service_endpoint_name != first.network_service_endpoint_name
    await client.chain.run_close(events.connection, CallContext())
