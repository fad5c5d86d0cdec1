"""Resource limits over real gRPC (sdk.limits): message size, message shape, in-flight calls per
peer (unary and streaming budgets), and a registry refusing hostile records with nothing stored.

The NetworkService server is ``sdk.limits.limited_server`` with a small test chain behind
``add_network_service``: ``Gate`` holds requests labelled ``slow`` until released (so calls stay
in flight for as long as a test needs), requests labelled ``fail`` fail, others are answered.
Peers are told apart as the limiter does it: by SPIFFE ID over mTLS, else by transport address
(each TCP connection has its own port; channels use a local subchannel pool so that two channels
never share a connection).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import nsmgr.__main__ as nsmgr_main
from api.proto import connection_pb2_grpc, networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection, MonitorScopeSelector
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkServiceLabels
from nsmgr.app import Nsmgr
from nsmgr.settings import NsmgrSettings
from sdk import heaptrim, settings
from sdk.errors import FailedPrecondition, InvalidArgument
from sdk.grpcutil import ListenAddress, channel, parse_address, serve, stop
from sdk.heaptrim import HeapTrim
from sdk.limits import MAX_MESSAGE, InFlightLimit, limited_server
from sdk.limits.inflight import REFUSED
from sdk.limits.shape import MAX_LABELS
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.monitor import Monitor, add_monitor
from sdk.networkservice.server import add_network_service
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource
from sdk.security.tls import channel_credentials, server_credentials, server_name
from sdk.testing.elements import Count, Respond
from tests.integration.conftest import (
    WAIT,
    RunningRegistry,
    endpoint_stub,
    find_endpoints,
    nse,
)
from tests.integration.fabric import Fabric

TD = "example.org"
ALICE = "spiffe://example.org/nsc/alice"
BOB = "spiffe://example.org/nsc/bob"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Gate(NetworkServiceElement):
    """Holds requests labelled ``slow=yes`` until :attr:`release` is set; fails ``fail=yes``."""

    def __init__(self) -> None:
        self.waiting = 0
        self.release = asyncio.Event()
        self._changed = asyncio.Event()

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        labels = request.connection.labels
        if labels.get("fail") == "yes":
            raise FailedPrecondition("told to fail")
        if labels.get("slow") != "yes":
            return await next.request(request)
        self.waiting += 1
        self._changed.set()
        try:
            await self.release.wait()
        finally:
            self.waiting -= 1
            self._changed.set()
        return await next.request(request)

    async def until_waiting(self, count: int, within: float = WAIT) -> None:
        """Return once exactly ``count`` requests wait at the gate; fail after ``within`` s."""
        async with asyncio.timeout(within):
            while self.waiting != count:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class LimitedServer:
    """A NetworkService + MonitorConnection + Health server behind an InFlightLimit."""

    limit: InFlightLimit
    gate: Gate
    count: Count
    monitor: Monitor
    address: ListenAddress

    def channel(self) -> grpc.aio.Channel:
        """A plain channel on a TCP connection of its own (a peer of its own)."""
        return grpc.aio.insecure_channel(self.address.target, options=OWN_CONNECTION)


StartServer = Callable[..., Any]


@pytest.fixture
async def servers() -> AsyncIterator[StartServer]:
    """Factory: ``await servers(max_in_flight_per_peer=3, credentials=None, ...)``."""
    running: list[tuple[grpc.aio.Server, list[ListenAddress], LimitedServer]] = []

    async def start(
        max_in_flight_per_peer: int = 3,
        max_streams_per_peer: int = 2,
        credentials: grpc.ServerCredentials | None = None,
        heap: HeapTrim | None = None,
    ) -> LimitedServer:
        if heap is None:  # the process's own trim, as every server has it
            server, limit = limited_server(max_in_flight_per_peer,
                                           max_streams_per_peer=max_streams_per_peer)
        else:
            limit = InFlightLimit(max_in_flight_per_peer, max_streams_per_peer, heap=heap)
            server = grpc.aio.server(interceptors=[limit])
        gate, count, monitor = Gate(), Count(), Monitor()
        add_network_service(server, NetworkServiceChain([count, monitor, gate, Respond()]))
        add_monitor(server, monitor)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        bound = await serve(server, [parse_address("tcp://127.0.0.1:0")],
                            insecure_tcp=credentials is None, credentials=credentials)
        started = LimitedServer(limit, gate, count, monitor, bound[0])
        running.append((server, bound, started))
        return started

    yield start
    for server, bound, started in running:
        started.gate.release.set()
        started.monitor.end_all()
        await stop(server, bound, 0.5)


def stub(channel: grpc.aio.Channel) -> Any:
    return networkservice_pb2_grpc.NetworkServiceStub(channel)


def request(**labels: str) -> NetworkServiceRequest:
    return NetworkServiceRequest(connection=Connection(network_service="svc", labels=labels))


async def status_of(call: Any) -> grpc.StatusCode:
    """The status a unary call ends with (OK or its error code)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Wait for server-side cleanup that has no event to wait on (a cancelled stream's handler
    runs its ``finally`` after the client has moved on): bounded polling, never a fixed sleep."""
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- message size and shape ---------------------------------------------------------------------


async def test_an_oversized_message_is_resource_exhausted_and_the_server_keeps_serving(
    servers: StartServer,
) -> None:
    srv = await servers()
    huge = request(big="x" * (MAX_MESSAGE + 1))
    async with srv.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(ch).Request(huge, timeout=WAIT)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert srv.count.requests == 0
        reply = await stub(ch).Request(request(app="web"), timeout=WAIT)
        assert reply.labels["app"] == "web"
    # ... and a fresh connection is served too.
    async with srv.channel() as ch:
        await stub(ch).Request(request(), timeout=WAIT)
    assert srv.count.requests == 2


async def test_a_message_over_a_shape_limit_is_invalid_argument_before_the_chain(
    servers: StartServer,
) -> None:
    srv = await servers()
    labels = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
    async with srv.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(ch).Request(request(**labels), timeout=WAIT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "connection.labels: at most 64 entries (got 65)"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(ch).Close(Connection(id="c", labels=labels), timeout=WAIT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("labels: at most 64")
        assert (srv.count.requests, srv.count.closes) == (0, 0)
        await stub(ch).Close(Connection(id="c"), timeout=WAIT)
    assert srv.count.closes == 1


# -- in-flight calls per peer -------------------------------------------------------------------


async def test_a_peer_over_its_budget_gets_resource_exhausted_and_others_are_served(
    servers: StartServer,
) -> None:
    n, extra = 3, 2
    refused_before = REFUSED.labels(kind="unary")._value.get()
    srv = await servers(max_in_flight_per_peer=n)
    async with srv.channel() as a, srv.channel() as b:
        calls = [asyncio.create_task(status_of(stub(a).Request(request(slow="yes"),
                                                                 timeout=WAIT)))
                 for _ in range(n + extra)]
        try:
            await srv.gate.until_waiting(n)
            refused: list[asyncio.Task[grpc.StatusCode]] = []
            while len(refused) < extra:  # the refused calls end on their own; the others wait
                done, _ = await asyncio.wait([c for c in calls if c not in refused],
                                             timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
                assert done, "a refused call did not end"
                refused.extend(done)
            assert len(refused) == extra
            assert not any(c.done() for c in calls if c not in refused)
            assert {c.result() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert list(srv.limit.in_flight().values()) == [n]
            assert srv.gate.waiting == n

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub(a).Request(request(), timeout=WAIT)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"{n} in flight" in (caught.value.details() or "")
            assert f"the limit is {n}" in (caught.value.details() or "")

            # Another peer is served, even with slow calls of its own, while `a` is saturated.
            await stub(b).Request(request(), timeout=WAIT)
            other = asyncio.create_task(status_of(stub(b).Request(request(slow="yes"),
                                                                  timeout=WAIT)))
            await srv.gate.until_waiting(n + 1)
            assert sorted(srv.limit.in_flight().values()) == [1, n]
        finally:
            srv.gate.release.set()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(*calls, other)
    assert results.count(grpc.StatusCode.OK) == n + 1
    assert results.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == extra
    assert REFUSED.labels(kind="unary")._value.get() - refused_before == extra + 1  # + the probe
    assert srv.limit.in_flight() == {}  # released before the answers left the server


async def test_the_budget_comes_back_after_errors_deadlines_and_cancellations(
    servers: StartServer,
) -> None:
    n = 2
    srv = await servers(max_in_flight_per_peer=n)
    async with srv.channel() as ch:
        for _ in range(3 * n):  # failing calls
            assert await status_of(stub(ch).Request(request(fail="yes"), timeout=WAIT)) == (
                grpc.StatusCode.FAILED_PRECONDITION
            )
        assert srv.limit.in_flight() == {}

        # Calls whose deadline passes, then calls the client cancels, while held at the gate.
        late = [stub(ch).Request(request(slow="yes"), timeout=0.5) for _ in range(n)]
        assert [await status_of(c) for c in late] == [grpc.StatusCode.DEADLINE_EXCEEDED] * n
        await srv.gate.until_waiting(0)
        cancelled = [stub(ch).Request(request(slow="yes"), timeout=WAIT) for _ in range(n)]
        await srv.gate.until_waiting(n)
        for call in cancelled:
            call.cancel()
        await srv.gate.until_waiting(0)  # the limiter releases in the same step as the gate
        assert srv.limit.in_flight() == {}

        # The whole budget is there again.
        held = [asyncio.create_task(status_of(stub(ch).Request(request(slow="yes"),
                                                                timeout=WAIT)))
                for _ in range(n)]
        await srv.gate.until_waiting(n)
        srv.gate.release.set()
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(*held) == [grpc.StatusCode.OK] * n
    assert srv.limit.in_flight() == {}


async def test_streams_have_their_own_budget_and_do_not_hold_the_unary_one(
    servers: StartServer,
) -> None:
    srv = await servers(max_in_flight_per_peer=1, max_streams_per_peer=2)
    async with srv.channel() as ch:
        monitor = connection_pb2_grpc.MonitorConnectionStub(ch)
        health_stub = health_pb2_grpc.HealthStub(ch)
        first = monitor.MonitorConnections(MonitorScopeSelector())
        second = health_stub.Watch(health_pb2.HealthCheckRequest(service=""))
        async with asyncio.timeout(WAIT):  # both streams are open: their first messages came
            assert (await first.read()) is not grpc.aio.EOF
            assert (await second.read()) is not grpc.aio.EOF
        assert list(srv.limit.streams_open().values()) == [2]

        third = monitor.MonitorConnections(MonitorScopeSelector())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(WAIT):
                await third.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the limit is 2" in (caught.value.details() or "")

        # Unary calls of the same peer are not affected by its open streams.
        for _ in range(3):
            await stub(ch).Request(request(), timeout=WAIT)
        assert srv.limit.in_flight() == {}

        srv.monitor.end_all()  # the server ends the monitor stream ...
        async with asyncio.timeout(WAIT):
            while (await first.read()) is not grpc.aio.EOF:
                pass
        assert list(srv.limit.streams_open().values()) == [1]
        second.cancel()  # ... and the client cancels the health watch
        await until(lambda: srv.limit.streams_open() == {})
        again = health_stub.Watch(health_pb2.HealthCheckRequest(service=""))
        async with asyncio.timeout(WAIT):
            assert (await again.read()) is not grpc.aio.EOF
        again.cancel()
    await until(lambda: srv.limit.streams_open() == {})


async def test_the_heap_is_trimmed_once_unary_calls_stop_not_while_one_is_held(
    servers: StartServer,
) -> None:
    trims: list[float] = []  # when the fake trim ran
    quiet = 0.1
    srv = await servers(heap=HeapTrim(quiet, lambda: trims.append(time.monotonic())))
    async with srv.channel() as ch:
        watch = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
            MonitorScopeSelector())
        async with asyncio.timeout(WAIT):  # an open stream is no call in flight
            assert (await watch.read()) is not grpc.aio.EOF
        for _ in range(3):
            await stub(ch).Request(request(), timeout=WAIT)
        held = asyncio.create_task(status_of(stub(ch).Request(request(slow="yes"),
                                                                timeout=WAIT)))
        await srv.gate.until_waiting(1)
        await asyncio.sleep(4 * quiet)
        assert trims == []  # a call is in flight
        srv.gate.release.set()
        assert await held == grpc.StatusCode.OK
        await until(lambda: len(trims) == 1)
        await asyncio.sleep(4 * quiet)
        assert len(trims) == 1  # the stream stays open, no call ran: no second trim
        await stub(ch).Request(request(), timeout=WAIT)
        await until(lambda: len(trims) == 2)
        watch.cancel()


async def test_every_server_reports_its_calls_to_the_process_trim(servers: StartServer) -> None:
    srv = await servers()
    before = heaptrim.PROCESS.in_flight
    async with srv.channel() as ch:
        held = asyncio.create_task(status_of(stub(ch).Request(request(slow="yes"),
                                                                timeout=WAIT)))
        await srv.gate.until_waiting(1)
        assert heaptrim.PROCESS.in_flight == before + 1
        srv.gate.release.set()
        assert await held == grpc.StatusCode.OK
    assert heaptrim.PROCESS.in_flight == before


async def test_over_mtls_the_peer_is_the_spiffe_id_not_the_connection(
    servers: StartServer,
) -> None:
    ca = CertificateAuthority.create(TD, now=time.time() - 3600)
    server_source = CaSvidSource(ca, "spiffe://example.org/nsmgr/node-1", [server_name(TD)])
    srv = await servers(max_in_flight_per_peer=2, credentials=server_credentials(server_source))
    alice, bob = CaSvidSource(ca, ALICE), CaSvidSource(ca, BOB)

    def channel(source: CaSvidSource) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            srv.address.target,
            channel_credentials(source.current()),
            options=[("grpc.ssl_target_name_override", server_name(TD)), *OWN_CONNECTION],
        )

    async with channel(alice) as a1, channel(alice) as a2, channel(bob) as b:
        held = [asyncio.create_task(status_of(stub(ch).Request(request(slow="yes"),
                                                                timeout=WAIT)))
                for ch in (a1, a2)]
        try:
            await srv.gate.until_waiting(2)
            # alice's budget is used up over two connections, so a third one of hers is refused
            async with channel(alice) as a3:
                assert await status_of(stub(a3).Request(request(), timeout=WAIT)) == (
                    grpc.StatusCode.RESOURCE_EXHAUSTED
                )
            # ... while bob has a budget of his own.
            held.append(asyncio.create_task(status_of(stub(b).Request(request(slow="yes"),
                                                                      timeout=WAIT))))
            await srv.gate.until_waiting(3)
            assert srv.limit.in_flight() == {ALICE: 2, BOB: 1}
        finally:
            srv.gate.release.set()
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(*held) == [grpc.StatusCode.OK] * 3
    assert srv.limit.in_flight() == {}


# -- the registry -------------------------------------------------------------------------------


async def test_registry_refuses_hostile_records_and_stores_nothing(
    registry: RunningRegistry, channel: grpc.aio.Channel
) -> None:
    endpoints = endpoint_stub(channel)
    many_labels = nse("db-1", ["secure-db"], labels={
        "secure-db": {f"k{i}": "v" for i in range(10_000)}
    })
    huge_url = nse("db-2", ["secure-db"], url="tcp://" + "h" * (2 * 1024 * 1024) + ":80")
    many_ids = nse("db-3", ["secure-db"])
    many_ids.path_ids.extend(f"spiffe://example.org/nsmgr/n{i}" for i in range(10_000))
    huge_labels = nse("db-4", ["secure-db"])
    huge_labels.network_service_labels["secure-db"].CopyFrom(
        NetworkServiceLabels(labels={"k": "v" * (2 * 1024 * 1024)})
    )
    expected = {
        "db-1": grpc.StatusCode.INVALID_ARGUMENT,
        "db-2": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "db-3": grpc.StatusCode.INVALID_ARGUMENT,
        "db-4": grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    for record in (many_labels, huge_url, many_ids, huge_labels):
        assert await status_of(endpoints.Register(record, timeout=WAIT)) == (
            expected[record.name]
        ), record.name
    assert await find_endpoints(endpoints) == {}
    assert registry.registry.endpoint_records.get("db-1") is None
    # The registry keeps serving.
    await endpoints.Register(nse("db-5", ["secure-db"]), timeout=WAIT)
    assert list(await find_endpoints(endpoints)) == ["db-5"]


async def test_the_processes_servers_enforce_the_limits(tmp_path: Path) -> None:
    """nsmgr, forwarder and endpoint of an in-process fabric refuse an oversized message and an
    over-shaped one, and still serve afterwards."""
    fab = Fabric(tmp_path)
    try:
        await fab.start(1)
        node = fab.nodes[0]
        await fab.endpoint(node, "nse-a")
        huge = request(big="x" * (MAX_MESSAGE + 1))
        too_many = request(**{f"k{i}": "v" for i in range(MAX_LABELS + 1)})
        for url in (node.nsmgr_url, f"unix://{node.dir}/forwarder.sock",
                    f"unix://{node.dir}/nse-a.sock"):
            async with channel(url) as ch:
                for message, code in ((huge, grpc.StatusCode.RESOURCE_EXHAUSTED),
                                      (too_many, grpc.StatusCode.INVALID_ARGUMENT)):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub(ch).Request(message, timeout=WAIT)
                    assert caught.value.code() == code, url
        conn = await fab.client(node, "c1").connect()
        assert conn.network_service_endpoint_name == "nse-a"
    finally:
        await fab.stop()


async def test_the_nsmgr_takes_its_budget_from_its_settings(tmp_path: Path) -> None:
    """``--max-in-flight-per-peer`` (or VWIRE_NSMGR_MAX_IN_FLIGHT_PER_PEER) is the budget of the
    nsmgr's server; a budget below 1 is refused before anything starts."""
    args = nsmgr_main._parser().parse_args(["--max-in-flight-per-peer", "7"])
    config = settings.load(NsmgrSettings, nsmgr_main.PREFIX, vars(args))
    config = dataclasses.replace(config, listen=[f"unix://{tmp_path}/nsmgr.sock"],
                                 advertise="tcp://127.0.0.1:1")
    nsmgr = Nsmgr(config)
    await nsmgr.start()
    try:
        assert nsmgr.limit is not None and nsmgr.limit.unary.limit == 7
    finally:
        await nsmgr.stop()
    with pytest.raises(InvalidArgument, match="max_in_flight_per_peer: must be at least 1"):
        Nsmgr(dataclasses.replace(config, max_in_flight_per_peer=0))
