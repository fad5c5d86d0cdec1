"""Registry ownership across a restart (issue 12, item 6): a real registry over mTLS on
127.0.0.1 with a real SQLite file, stopped and started again on the same file. Before the fix
owners lived only in memory, and after a restart another identity took over a service and an
endpoint and locked their owner out."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import (
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
    NetworkServiceQuery,
)
from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import parse_address
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource
from sdk.security.tls import secure_channel, server_credentials, server_name

TD = "example.org"
OWNER = "spiffe://example.org/nsmgr/node-a"
THIEF = "spiffe://example.org/nsmgr/node-b"
WAIT = 5.0

Start = Callable[[], Awaitable[str]]


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, now=time.time() - 3600)


@pytest.fixture
async def registry_on_file(ca: CertificateAuthority) -> AsyncIterator[tuple[Start, Path]]:
    """``start()`` runs a registry on the same SQLite file (stopping the previous one) and
    returns its TCP target."""
    with tempfile.TemporaryDirectory(prefix="vwt-restart-") as tmp:
        path = Path(tmp) / "state" / "registry.db"
        running: list[Registry] = []
        source = CaSvidSource(ca, "spiffe://example.org/registry/main", [server_name(TD)])

        async def start() -> str:
            if running:
                await running.pop().stop(grace=0)
            registry = Registry(open_store(f"sqlite:///{path}"))
            await registry.start([parse_address("tcp://127.0.0.1:0")], False,
                                 server_credentials(source))
            running.append(registry)
            return registry.addresses[0].target

        yield start, path
        for registry in running:
            await registry.stop(grace=0)


def stubs(ch: grpc.aio.Channel) -> tuple[Any, Any]:
    """Service and endpoint stubs (the generated ones are typed for sync channels)."""
    return (registry_pb2_grpc.NetworkServiceRegistryStub(ch),
            registry_pb2_grpc.NetworkServiceEndpointRegistryStub(ch))


def as_identity(ca: CertificateAuthority, spiffe_id: str, target: str) -> grpc.aio.Channel:
    return secure_channel(f"tcp://{target}", CaSvidSource(ca, spiffe_id))


async def snapshot(ch: grpc.aio.Channel) -> tuple[dict[str, bytes], dict[str, bytes]]:
    services, endpoints = stubs(ch)
    found_services = {
        r.network_service.name: r.network_service.SerializeToString(deterministic=True)
        async for r in services.Find(NetworkServiceQuery(network_service=NetworkService()),
                                     timeout=WAIT)}
    found_endpoints = {
        r.network_service_endpoint.name:
            r.network_service_endpoint.SerializeToString(deterministic=True)
        async for r in endpoints.Find(NetworkServiceEndpointQuery(
            network_service_endpoint=NetworkServiceEndpoint()), timeout=WAIT)}
    return found_services, found_endpoints


async def test_owners_are_enforced_after_a_restart(
    ca: CertificateAuthority, registry_on_file: tuple[Start, Path]
) -> None:
    start, _ = registry_on_file
    target = await start()
    service = NetworkService(name="secure-db", payload="IP")
    record = NetworkServiceEndpoint(name="db-1", url="tcp://10.0.0.1:5001",
                                    network_service_names=["secure-db"])
    async with as_identity(ca, OWNER, target) as ch:
        services, endpoints = stubs(ch)
        await services.Register(service, timeout=WAIT)
        await endpoints.Register(record, timeout=WAIT)

    target = await start()  # a restart on the same file
    async with as_identity(ca, OWNER, target) as ch:
        before = await snapshot(ch)
    assert set(before[0]) == {"secure-db"} and set(before[1]) == {"db-1"}

    async with as_identity(ca, THIEF, target) as ch:
        services, endpoints = stubs(ch)
        attempts = [
            services.Register(NetworkService(name="secure-db", payload="ETHERNET"), timeout=WAIT),
            endpoints.Register(NetworkServiceEndpoint(
                name="db-1", url="tcp://10.6.6.6:5001", network_service_names=["secure-db"]),
                timeout=WAIT),
            endpoints.Unregister(NetworkServiceEndpoint(name="db-1"), timeout=WAIT),
            services.Unregister(NetworkService(name="secure-db"), timeout=WAIT),
        ]
        for attempt in attempts:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await attempt
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
            assert f"belongs to {OWNER}" in (err.value.details() or "")

    async with as_identity(ca, OWNER, target) as ch:
        assert await snapshot(ch) == before  # nothing changed
        services, endpoints = stubs(ch)
        record.url = "tcp://10.0.0.1:5002"  # the owner may still change and remove its own
        await endpoints.Register(record, timeout=WAIT)
        await endpoints.Unregister(record, timeout=WAIT)
        await services.Unregister(service, timeout=WAIT)
        assert await snapshot(ch) == ({}, {})


async def test_a_freed_name_is_free_after_a_restart(
    ca: CertificateAuthority, registry_on_file: tuple[Start, Path]
) -> None:
    start, path = registry_on_file
    target = await start()
    record = NetworkServiceEndpoint(name="db-1", url="tcp://10.0.0.1:5001",
                                    network_service_names=["secure-db"])
    async with as_identity(ca, OWNER, target) as ch:
        await stubs(ch)[1].Register(record, timeout=WAIT)
        await stubs(ch)[1].Unregister(record, timeout=WAIT)
    target = await start()
    async with as_identity(ca, THIEF, target) as ch:
        await stubs(ch)[1].Register(record, timeout=WAIT)  # nobody holds it any more
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name, owner FROM records").fetchall() == [("db-1", THIEF)]
