"""The registry over real gRPC: Register/Find/Unregister for both record kinds over a Unix socket
and plain TCP, Find's template semantics, watches (initial state, changes, deletions, expiry,
refresh), input validation with nothing stored, health and reflection. Clients are the generated
stubs and the SDK's ``RemoteRegistry`` element."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from api.proto.registry_pb2 import (
    Destination,
    Match,
    NetworkService,
    NetworkServiceEndpoint,
)
from registry.app import Registry
from registry.store import open_store
from sdk.errors import FailedPrecondition, InvalidArgument, NotFound
from sdk.grpcutil import parse_address
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from tests.integration.conftest import (
    WAIT,
    RunningRegistry,
    StartRegistry,
    endpoint_stub,
    endpoint_watcher,
    find_endpoints,
    find_services,
    ns,
    nse,
    service_stub,
    service_watcher,
)

TRANSPORTS = ["unix", "tcp"]


@pytest.fixture(params=["memory", "etcd"])
def default_store(request: pytest.FixtureRequest) -> str:
    """Every test here runs over the in-memory store and over a real etcd (a prefix of its own)."""
    if request.param == "etcd":
        url: str = request.getfixturevalue("etcd_url")
        return url
    return "memory://"


@pytest.fixture(params=TRANSPORTS)
async def any_channel(
    request: pytest.FixtureRequest, registries: StartRegistry
) -> Any:
    """A channel to a fresh registry over the Unix socket or over plain TCP."""
    running = await registries(tcp=True)
    async with grpc.aio.insecure_channel(running.target(request.param)) as ch:
        yield ch


def seconds(ts: Any) -> float:
    return float(ts.ToNanoseconds()) / 1e9


# -- Register / Find / Unregister ---------------------------------------------------------------


async def test_endpoint_register_find_unregister(any_channel: grpc.aio.Channel) -> None:
    stub = endpoint_stub(any_channel)
    before = time.time()
    reply: NetworkServiceEndpoint = await stub.Register(
        nse("nse-1", ["secure-db"], "tcp://10.0.0.1:5001", {"secure-db": {"app": "db"}}),
        timeout=WAIT,
    )
    assert reply.name == "nse-1"
    assert reply.url == "tcp://10.0.0.1:5001"
    assert list(reply.network_service_names) == ["secure-db"]
    assert dict(reply.network_service_labels["secure-db"].labels) == {"app": "db"}
    assert seconds(reply.expiration_time) > before  # the default TTL was applied
    assert before - 1 <= seconds(reply.initial_registration_time) <= time.time() + 1

    found = await find_endpoints(stub)
    assert list(found) == ["nse-1"]
    assert found["nse-1"] == reply

    await stub.Unregister(nse("nse-1"), timeout=WAIT)
    assert await find_endpoints(stub) == {}


async def test_service_register_find_unregister(any_channel: grpc.aio.Channel) -> None:
    stub = service_stub(any_channel)
    record = NetworkService(
        name="secure-db",
        payload="IP",
        matches=[
            Match(
                source_selector={"app": "web"},
                routes=[Destination(destination_selector={"zone": "a"}, weight=3)],
                fallthrough=True,
            )
        ],
    )
    reply: NetworkService = await stub.Register(record, timeout=WAIT)
    assert reply == record
    assert await find_services(stub) == {"secure-db": record}

    await stub.Unregister(ns("secure-db"), timeout=WAIT)
    assert await find_services(stub) == {}


async def test_service_payload_defaults_to_ip(channel: grpc.aio.Channel) -> None:
    stub = service_stub(channel)
    reply: NetworkService = await stub.Register(ns("plain"), timeout=WAIT)
    assert reply.payload == "IP"
    assert (await find_services(stub))["plain"].payload == "IP"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_remote_registry_client(registries: StartRegistry, transport: str) -> None:
    """The SDK client element against the real server: both kinds, find, watch, error mapping."""
    running = await registries(tcp=True)
    async with grpc.aio.insecure_channel(running.target(transport)) as ch:
        endpoints = RegistryChain([RemoteRegistry(ENDPOINT, ch)])
        services = RegistryChain([RemoteRegistry(SERVICE, ch)])

        stored_ns = await services.register(ns("svc-a", "ETHERNET"))
        assert stored_ns.payload == "ETHERNET"
        stored = await endpoints.register(nse("nse-a", ["svc-a"]))
        assert stored.HasField("expiration_time")

        found = [e async for e in endpoints.find(Query(NetworkServiceEndpoint(name="nse-a")))]
        assert [(e.record.name, e.deleted) for e in found] == [("nse-a", False)]
        assert [e.record.name async for e in services.find(Query(NetworkService()))] == ["svc-a"]

        # A watch through the client: initial state, then a deletion; closing the generator
        # cancels the call.
        watch = cast(
            AsyncGenerator[Event[NetworkServiceEndpoint], None],
            endpoints.find(Query(NetworkServiceEndpoint(), watch=True)),
        )
        async with contextlib.aclosing(watch):
            first = await anext(watch)
            assert (first.record.name, first.deleted) == ("nse-a", False)
            await endpoints.unregister(nse("nse-a"))
            gone = await anext(watch)
            assert (gone.record.name, gone.deleted) == ("nse-a", True)

        with pytest.raises(InvalidArgument) as bad:
            await endpoints.register(nse("Bad_Name", ["svc-a"]))
        assert bad.value.field == "name"
        with pytest.raises(NotFound):
            await services.unregister(ns("never-registered"))
        await services.unregister(ns("svc-a"))
        assert [e async for e in services.find(Query(NetworkService()))] == []


# -- Find templates -----------------------------------------------------------------------------


async def test_find_endpoint_templates(channel: grpc.aio.Channel) -> None:
    stub = endpoint_stub(channel)
    records = [
        nse("nse-a", ["svc-x", "svc-y"], "unix:///run/a.sock",
            {"svc-x": {"app": "web", "zone": "z1"}}),
        nse("nse-b", ["svc-x"], "tcp://10.0.0.2:5000", {"svc-x": {"app": "db"}}),
        nse("nse-c", ["svc-y"], "unix:///run/c.sock"),
    ]
    for record in records:
        await stub.Register(record, timeout=WAIT)

    def template(
        name: str = "", services: tuple[str, ...] = (), url: str = "",
        labels: dict[str, dict[str, str]] | None = None,
    ) -> NetworkServiceEndpoint:
        record = nse(name, services, url, labels)
        return record

    cases: list[tuple[NetworkServiceEndpoint, set[str]]] = [
        (NetworkServiceEndpoint(), {"nse-a", "nse-b", "nse-c"}),
        (template(name="nse-b"), {"nse-b"}),
        (template(name="nse-zzz"), set()),
        (template(services=("svc-x",)), {"nse-a", "nse-b"}),
        (template(services=("svc-y",)), {"nse-a", "nse-c"}),
        (template(services=("svc-x", "svc-y")), {"nse-a"}),
        (template(services=("svc-none",)), set()),
        (template(labels={"svc-x": {"app": "web"}}), {"nse-a"}),
        (template(labels={"svc-x": {"app": "web", "zone": "z1"}}), {"nse-a"}),
        (template(labels={"svc-x": {"zone": "z2"}}), set()),
        (template(labels={"svc-y": {"app": "web"}}), set()),
        (template(services=("svc-x",), labels={"svc-x": {"app": "db"}}), {"nse-b"}),
        (template(url="tcp://10.0.0.2:5000"), {"nse-b"}),
        (template(url="unix:///run/c.sock"), {"nse-c"}),
        (template(name="nse-a", url="unix:///run/c.sock"), set()),
    ]
    for query, expected in cases:
        assert set(await find_endpoints(stub, query)) == expected, query


async def test_find_service_templates(channel: grpc.aio.Channel) -> None:
    stub = service_stub(channel)
    for record in (ns("svc-ip"), ns("svc-eth", "ETHERNET"), ns("svc-ip2", "IP")):
        await stub.Register(record, timeout=WAIT)
    cases: list[tuple[NetworkService, set[str]]] = [
        (NetworkService(), {"svc-ip", "svc-eth", "svc-ip2"}),
        (ns("svc-eth"), {"svc-eth"}),
        (ns("svc-none"), set()),
        (NetworkService(payload="ETHERNET"), {"svc-eth"}),
        (NetworkService(payload="IP"), {"svc-ip", "svc-ip2"}),
        (ns("svc-eth", "IP"), set()),
    ]
    for query, expected in cases:
        assert set(await find_services(stub, query)) == expected, query


# -- Watch --------------------------------------------------------------------------------------


async def test_watch_sends_current_records_then_changes(channel: grpc.aio.Channel) -> None:
    stub = endpoint_stub(channel)
    await stub.Register(nse("nse-old", ["svc"]), timeout=WAIT)
    watcher = endpoint_watcher(stub)
    try:
        first = await watcher.next()
        assert (first.network_service_endpoint.name, first.deleted) == ("nse-old", False)

        await stub.Register(nse("nse-new", ["svc"]), timeout=WAIT)
        added = await watcher.next()
        assert (added.network_service_endpoint.name, added.deleted) == ("nse-new", False)
        assert added.network_service_endpoint.HasField("expiration_time")

        await stub.Unregister(nse("nse-old"), timeout=WAIT)
        removed = await watcher.next()
        assert (removed.network_service_endpoint.name, removed.deleted) == ("nse-old", True)
        # The deletion carries the record as it was stored, not just the name.
        assert list(removed.network_service_endpoint.network_service_names) == ["svc"]
    finally:
        watcher.close()


async def test_watch_with_template_sees_only_matching_changes(channel: grpc.aio.Channel) -> None:
    stub = endpoint_stub(channel)
    await stub.Register(nse("nse-a0", ["svc-a"]), timeout=WAIT)
    await stub.Register(nse("nse-b0", ["svc-b"]), timeout=WAIT)
    watcher = endpoint_watcher(stub, nse("", ["svc-a"], url=""))
    try:
        first = await watcher.next()  # initial state: only the matching record
        assert first.network_service_endpoint.name == "nse-a0"

        # Changes are delivered in order, so if the non-matching ones leaked through they
        # would arrive before the matching one.
        await stub.Register(nse("nse-b1", ["svc-b"]), timeout=WAIT)
        await stub.Unregister(nse("nse-b0"), timeout=WAIT)
        await stub.Register(nse("nse-a1", ["svc-a", "svc-b"]), timeout=WAIT)
        nxt = await watcher.next()
        assert (nxt.network_service_endpoint.name, nxt.deleted) == ("nse-a1", False)

        await stub.Unregister(nse("nse-b1"), timeout=WAIT)
        await stub.Unregister(nse("nse-a0"), timeout=WAIT)
        nxt = await watcher.next()
        assert (nxt.network_service_endpoint.name, nxt.deleted) == ("nse-a0", True)
    finally:
        watcher.close()


async def test_watch_services(channel: grpc.aio.Channel) -> None:
    stub = service_stub(channel)
    await stub.Register(ns("svc-ip"), timeout=WAIT)
    watcher = service_watcher(stub, NetworkService(payload="ETHERNET"))
    both = service_watcher(stub)
    try:
        assert (await both.next()).network_service.name == "svc-ip"
        await stub.Register(ns("svc-ip2"), timeout=WAIT)
        await stub.Register(ns("svc-eth", "ETHERNET"), timeout=WAIT)
        await stub.Unregister(ns("svc-eth"), timeout=WAIT)
        added, removed = await watcher.next(), await watcher.next()
        assert (added.network_service.name, added.deleted) == ("svc-eth", False)
        assert (removed.network_service.name, removed.deleted) == ("svc-eth", True)
        seen = [await both.next() for _ in range(3)]
        assert [(r.network_service.name, r.deleted) for r in seen] == [
            ("svc-ip2", False), ("svc-eth", False), ("svc-eth", True)
        ]
    finally:
        watcher.close()
        both.close()


async def test_endpoint_expiry_reaches_watchers(registries: StartRegistry) -> None:
    running = await registries(default_ttl=0.3)
    async with grpc.aio.insecure_channel(running.target()) as ch:
        stub = endpoint_stub(ch)
        await stub.Register(nse("sentinel", ["other"], expires_in=60), timeout=WAIT)
        watcher = endpoint_watcher(stub, nse("", ["svc"], url=""))
        everything = endpoint_watcher(stub)
        try:
            assert (await everything.next()).network_service_endpoint.name == "sentinel"
            reply = await stub.Register(nse("short", ["svc"]), timeout=WAIT)
            assert seconds(reply.expiration_time) - time.time() <= 0.3
            added = await watcher.next()
            assert (added.network_service_endpoint.name, added.deleted) == ("short", False)

            expired = await watcher.next(within=3.0)
            assert (expired.network_service_endpoint.name, expired.deleted) == ("short", True)
            assert time.time() >= seconds(reply.expiration_time)
            assert set(await find_endpoints(stub)) == {"sentinel"}
            seen = [await everything.next() for _ in range(2)]
            assert [(r.network_service_endpoint.name, r.deleted) for r in seen] == [
                ("short", False), ("short", True)
            ]
        finally:
            watcher.close()
            everything.close()


async def test_reregistering_refreshes_expiry(registries: StartRegistry) -> None:
    running = await registries(default_ttl=1.0)
    async with grpc.aio.insecure_channel(running.target()) as ch:
        stub = endpoint_stub(ch)
        watcher = endpoint_watcher(stub, nse("refreshed", url=""))
        await stub.Register(nse("anchor", expires_in=60), timeout=WAIT)
        try:
            first = await stub.Register(nse("refreshed", ["svc"]), timeout=WAIT)
            assert (await watcher.next()).network_service_endpoint.name == "refreshed"
            # The refresh a client sends: the stored record with expiration_time cleared, so the
            # registry applies its default TTL again.
            again = NetworkServiceEndpoint()
            again.CopyFrom(first)
            again.ClearField("expiration_time")
            second = await stub.Register(again, timeout=WAIT)
            assert second.initial_registration_time == first.initial_registration_time
            assert seconds(second.expiration_time) > seconds(first.expiration_time)
            # An explicit later expiration moves it as asked.
            third = await stub.Register(nse("refreshed", ["svc"], expires_in=30), timeout=WAIT)
            assert third.initial_registration_time == first.initial_registration_time
            assert seconds(third.expiration_time) > time.time() + 20
            found = await find_endpoints(stub, nse("refreshed", url=""))
            assert found["refreshed"].expiration_time == third.expiration_time
            # Watchers saw both refreshes as updates, never a deletion.
            for _ in range(2):
                update = await watcher.next()
                assert (update.network_service_endpoint.name, update.deleted) == (
                    "refreshed", False
                )
        finally:
            watcher.close()


# -- Validation ---------------------------------------------------------------------------------

BAD_ENDPOINTS: list[tuple[str, NetworkServiceEndpoint, str]] = [
    ("empty-name", nse("", ["svc"]), "name"),
    ("long-name", nse("a" * 254, ["svc"]), "name"),
    ("non-dns-name", nse("Bad_Name", ["svc"]), "name"),
    ("unknown-url-scheme", nse("nse-1", ["svc"], url="http://x"), "url"),
    ("empty-url", nse("nse-1", ["svc"], url=""), "url"),
    ("bad-service-name", nse("nse-1", ["Not A Service"]), "network_service_names[0]"),
    ("expired", nse("nse-1", ["svc"], expires_in=-10), "expiration_time"),
    (
        "labels-for-unlisted-service",
        nse("nse-1", ["svc"], labels={"other": {"app": "x"}}),
        "network_service_labels['other']",
    ),
    ("bad-label-key", nse("nse-1", ["svc"], labels={"svc": {"-bad": "x"}}),
     "network_service_labels['svc']['-bad']"),
]
BAD_SERVICES: list[tuple[str, NetworkService, str]] = [
    ("empty-name", ns(""), "name"),
    ("long-name", ns("b" * 254), "name"),
    ("non-dns-name", ns("Bad_Name"), "name"),
    ("unknown-payload", ns("svc", "PPP"), "payload"),
]


async def assert_invalid(call: Any, record: Any, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(record, timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith(f"{field}: "), details
    assert len(details) > len(field) + 10, "the message should say what is wrong"


@pytest.mark.parametrize(
    ("case", "record", "field"), BAD_ENDPOINTS, ids=[c[0] for c in BAD_ENDPOINTS]
)
async def test_invalid_endpoint_rejected_and_not_stored(
    channel: grpc.aio.Channel, case: str, record: NetworkServiceEndpoint, field: str
) -> None:
    stub = endpoint_stub(channel)
    await assert_invalid(stub.Register, record, field)
    assert await find_endpoints(stub) == {}


@pytest.mark.parametrize(
    ("case", "record", "field"), BAD_SERVICES, ids=[c[0] for c in BAD_SERVICES]
)
async def test_invalid_service_rejected_and_not_stored(
    channel: grpc.aio.Channel, case: str, record: NetworkService, field: str
) -> None:
    stub = service_stub(channel)
    await assert_invalid(stub.Register, record, field)
    assert await find_services(stub) == {}


async def test_rejected_register_reaches_no_watcher(channel: grpc.aio.Channel) -> None:
    stub = endpoint_stub(channel)
    watcher = endpoint_watcher(stub)
    try:
        await stub.Register(nse("first", ["svc"]), timeout=WAIT)
        assert (await watcher.next()).network_service_endpoint.name == "first"
        for _, record, field in BAD_ENDPOINTS:
            await assert_invalid(stub.Register, record, field)
        await stub.Register(nse("last", ["svc"]), timeout=WAIT)
        assert (await watcher.next()).network_service_endpoint.name == "last"
    finally:
        watcher.close()


async def test_unregister_unknown_is_not_found(channel: grpc.aio.Channel) -> None:
    for call, record in (
        (endpoint_stub(channel).Unregister, nse("ghost")),
        (service_stub(channel).Unregister, ns("ghost")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(record, timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "ghost" in (err.value.details() or "")
    await assert_invalid(endpoint_stub(channel).Unregister, nse(""), "name")


async def test_tcp_without_insecure_is_refused(short_tmp: Any) -> None:
    registry = Registry(open_store("memory://"))
    with pytest.raises(FailedPrecondition, match="--insecure"):
        await registry.start([parse_address("tcp://127.0.0.1:0")], insecure_tcp=False)
    await registry.stop()


# -- Health and reflection ----------------------------------------------------------------------


async def test_health_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "registry.NetworkServiceRegistry",
                    "registry.NetworkServiceEndpointRegistry"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_lists_registry_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=WAIT)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "registry.NetworkServiceRegistry",
        "registry.NetworkServiceEndpointRegistry",
        "grpc.health.v1.Health",
    } <= names
    # The descriptors are served too, so grpcurl and friends can call the registry.
    await_file = stub.ServerReflectionInfo(timeout=WAIT)
    await await_file.write(reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="registry.NetworkServiceEndpointRegistry"))
    file_reply = await await_file.read()
    await await_file.done_writing()
    assert file_reply.file_descriptor_response.file_descriptor_proto


async def test_registry_fixture_cleans_up(registry: RunningRegistry) -> None:
    assert registry.socket_path.is_socket()
    await registry.registry.stop(grace=0)
    assert not registry.socket_path.exists()
