"""The nsmgr's connection monitor (issue 12, items 2 and 7), over a real gRPC server on a
temporary unix socket and against a real fabric (fake kernels).

Local callers never get a path token from the monitor, only its fingerprint; a subscriber that
falls behind is cut with ``RESOURCE_EXHAUSTED`` naming the limit instead of queueing without
bound, and can subscribe again.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import (
    INITIAL_STATE_TRANSFER,
    Connection,
    ConnectionEvent,
    MonitorScopeSelector,
)
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.grpcutil import channel
from sdk.networkservice import monitor as monitor_module
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.monitor import Monitor, add_monitor
from sdk.security import token
from sdk.security.source import FileSvidSource
from sdk.security.tls import secure_channel
from tests.integration.fabric import Fabric, temporary_fabric

#: The documented per-subscriber limit (sdk.networkservice.monitor.MAX_BACKLOG_EVENTS).
LIMIT = 1024


class Answer(NetworkServiceElement):
    """Terminal: the connection as requested (no awaits: requests run back to back)."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        return request.connection


@pytest.fixture
async def served() -> AsyncIterator[tuple[Monitor, str]]:
    """A Monitor served on a real unix socket; its address."""
    monitor = Monitor()
    server = grpc.aio.server()
    add_monitor(server, monitor)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwm-") as root:
        address = f"unix://{root}/monitor.sock"
        server.add_insecure_port(address)
        await server.start()
        try:
            yield monitor, address
        finally:
            monitor.end_all()
            await server.stop(grace=0)


async def test_a_subscriber_that_falls_behind_is_cut_and_can_resubscribe(
    served: tuple[Monitor, str],
) -> None:
    monitor, address = served
    limit = LIMIT
    chain = NetworkServiceChain([monitor, Answer()])
    async with channel(address) as ch:
        stub = connection_pb2_grpc.MonitorConnectionStub(ch)
        slow = stub.MonitorConnections(MonitorScopeSelector(), timeout=30)
        first = await slow.read()
        assert isinstance(first, ConnectionEvent) and first.type == INITIAL_STATE_TRANSFER
        # More updates than the limit, back to back: the stream gets no chance to drain.
        for i in range(limit + 1):
            conn = Connection(id=f"c-{i}", network_service="db")
            await chain.run_request(NetworkServiceRequest(connection=conn))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            event = await slow.read()
            pytest.fail(f"a cut subscriber got {event}")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"more than {limit} events" in (caught.value.details() or "")
        assert not monitor._subscribers, "its backlog is gone with it"
        assert monitor_module.MAX_BACKLOG_EVENTS == LIMIT

        again = stub.MonitorConnections(MonitorScopeSelector(), timeout=30)
        state = await again.read()
        assert isinstance(state, ConnectionEvent)
        assert len(state.connections) == limit + 1, "a new subscription starts from the state"
        again.cancel()


async def test_a_subscriber_that_keeps_up_is_never_cut(served: tuple[Monitor, str]) -> None:
    monitor, address = served
    chain = NetworkServiceChain([monitor, Answer()])
    async with channel(address) as ch:
        stream = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
            MonitorScopeSelector(), timeout=30)
        await stream.read()
        for i in range(3 * LIMIT):
            await chain.run_request(NetworkServiceRequest(connection=Connection(id=f"c-{i}")))
            event = await stream.read()
            assert isinstance(event, ConnectionEvent) and f"c-{i}" in event.connections
        stream.cancel()


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwm-", identities=True) as fab:
        yield fab


async def first_state(ch: grpc.aio.Channel) -> list[Connection]:
    stream = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
        MonitorScopeSelector(), timeout=5)
    event = await stream.read()
    stream.cancel()
    assert isinstance(event, ConnectionEvent)
    return list(event.connections.values())


async def test_local_callers_see_fingerprints_never_tokens(fabric: Fabric) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n2, "nse-a")
    client = fabric.client(n1, "c1")
    conn = await client.connect()
    held = {s.id: s.token for s in conn.path.path_segments}
    assert all(held.values()) or list(held.values())[-1] == ""

    for node in (n1, n2):
        async with channel(node.nsmgr_url) as ch:
            shown = await first_state(ch)
        assert shown, "local callers still see the connections"
        for c in shown:
            for segment in c.path.path_segments:
                original = held[segment.id]
                expected = "sha256:" + token.token_hash(original)[:16] if original else ""
                assert segment.token == expected, "a fingerprint, not the token"

    # A path member over mTLS holds the tokens anyway (they come back in its replies).
    assert fabric.identities is not None and n2.nsmgr is not None
    source = FileSvidSource(Path(fabric.identities.root / "identities" / "nsmgr" / "nsmgr-n1"))
    async with secure_channel(n2.nsmgr.advertise, source) as ch:
        member = await first_state(ch)
    assert member and all(token.verify(s.token, fabric.identities.ca.bundle, allow_expired=True)
                          for c in member for s in c.path.path_segments if s.token)
    assert await client.connect(), "the client's own monitor and refreshes still work"
