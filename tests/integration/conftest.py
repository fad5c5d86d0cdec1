"""Fixtures for integration tests: real registries on temporary sockets, and channels to them.

``registries`` is a factory starting :class:`registry.app.Registry` in-process on a short Unix
socket path (``/tmp/...``: sun_path is limited to 108 bytes) and optionally on TCP 127.0.0.1;
everything it started is stopped at teardown. Its default store is ``default_store`` (memory://;
a test module overrides that fixture to run its tests over other stores, e.g. a real etcd).
``registry`` is one such registry with the default store, and ``channel`` a grpc.aio channel to
it. The helpers below (records, finds, watchers) are
imported by the registry tests.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import (
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
    NetworkServiceEndpointResponse,
    NetworkServiceLabels,
    NetworkServiceQuery,
    NetworkServiceResponse,
)
from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import ListenAddress, parse_address

#: Upper bound for any single wait on the registry in these tests.
WAIT = 5.0


def nse(
    name: str,
    services: Iterable[str] = (),
    url: str = "unix:///run/nse.sock",
    labels: Mapping[str, Mapping[str, str]] | None = None,
    expires_in: float | None = None,
) -> NetworkServiceEndpoint:
    """A NetworkServiceEndpoint; ``expires_in`` seconds from now sets expiration_time."""
    record = NetworkServiceEndpoint(
        name=name,
        network_service_names=list(services),
        url=url,
        network_service_labels={
            service: NetworkServiceLabels(labels=dict(pairs))
            for service, pairs in (labels or {}).items()
        },
    )
    if expires_in is not None:
        record.expiration_time.FromNanoseconds(int((time.time() + expires_in) * 1e9))
    return record


def ns(name: str, payload: str = "") -> NetworkService:
    """A NetworkService."""
    return NetworkService(name=name, payload=payload)


def endpoint_stub(channel: grpc.aio.Channel) -> Any:
    """A generated NetworkServiceEndpointRegistry stub (typed loosely: the stubs are untyped)."""
    return registry_pb2_grpc.NetworkServiceEndpointRegistryStub(channel)


def service_stub(channel: grpc.aio.Channel) -> Any:
    """A generated NetworkServiceRegistry stub."""
    return registry_pb2_grpc.NetworkServiceRegistryStub(channel)


async def find_endpoints(
    stub: Any, template: NetworkServiceEndpoint | None = None
) -> dict[str, NetworkServiceEndpoint]:
    """Non-watching Find: the matching endpoints by name."""
    query = NetworkServiceEndpointQuery(
        network_service_endpoint=template or NetworkServiceEndpoint()
    )
    responses: list[NetworkServiceEndpointResponse] = [
        r async for r in stub.Find(query, timeout=WAIT)
    ]
    assert not any(r.deleted for r in responses)
    return {r.network_service_endpoint.name: r.network_service_endpoint for r in responses}


async def find_services(
    stub: Any, template: NetworkService | None = None
) -> dict[str, NetworkService]:
    """Non-watching Find: the matching network services by name."""
    query = NetworkServiceQuery(network_service=template or NetworkService())
    responses: list[NetworkServiceResponse] = [r async for r in stub.Find(query, timeout=WAIT)]
    assert not any(r.deleted for r in responses)
    return {r.network_service.name: r.network_service for r in responses}


class Watcher:
    """A watching Find stream read with bounded waits; cancel it with :meth:`close`."""

    def __init__(self, stub: Any, query: NetworkServiceEndpointQuery | NetworkServiceQuery):
        self.call = stub.Find(query)

    async def next(self, within: float = WAIT) -> Any:
        """The next response; fails the test if none arrives within ``within`` seconds."""
        async with asyncio.timeout(within):
            response = await self.call.read()
        assert response is not grpc.aio.EOF, f"watch stream ended: {await self.call.code()}"
        return response

    async def until_end(self, within: float = WAIT) -> grpc.StatusCode:
        """Read until the server ends the stream; returns its status code."""
        async with asyncio.timeout(within):
            while await self.call.read() is not grpc.aio.EOF:
                pass
            code: grpc.StatusCode = await self.call.code()
        return code

    def close(self) -> None:
        self.call.cancel()


def endpoint_watcher(stub: Any, template: NetworkServiceEndpoint | None = None) -> Watcher:
    """Open a watching endpoint Find."""
    query = NetworkServiceEndpointQuery(
        network_service_endpoint=template or NetworkServiceEndpoint(), watch=True
    )
    return Watcher(stub, query)


@dataclass
class RunningRegistry:
    """An in-process registry and where it listens."""

    registry: Registry
    unix: ListenAddress
    tcp: ListenAddress | None

    def target(self, transport: str = "unix") -> str:
        """gRPC target of the unix socket or of the TCP listener."""
        if transport == "tcp":
            assert self.tcp is not None, "start the registry with tcp=True"
            return self.tcp.target
        return self.unix.target

    @property
    def socket_path(self) -> Path:
        return Path(self.unix.path)


StartRegistry = Callable[..., Awaitable[RunningRegistry]]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory under /tmp, short enough for Unix socket paths; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="vwt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def default_store() -> str:
    """The store ``registries`` uses unless told otherwise (override it per module)."""
    return "memory://"


@pytest.fixture
async def registries(short_tmp: Path, default_store: str) -> AsyncIterator[StartRegistry]:
    """Factory: ``await registries(store=default_store, default_ttl=60.0, tcp=False)``."""
    started: list[Registry] = []
    count = 0

    async def start(
        store: str | None = None, default_ttl: float = 60.0, tcp: bool = False
    ) -> RunningRegistry:
        nonlocal count
        count += 1
        urls = [f"unix://{short_tmp}/r{count}.sock"]
        if tcp:
            urls.append("tcp://127.0.0.1:0")
        registry = Registry(open_store(store or default_store), default_ttl=default_ttl)
        await registry.start([parse_address(url) for url in urls], insecure_tcp=tcp)
        started.append(registry)
        bound = registry.addresses
        return RunningRegistry(registry, bound[0], bound[1] if tcp else None)

    yield start
    for registry in reversed(started):
        await registry.stop(grace=0.5)


@pytest.fixture
async def registry(registries: StartRegistry) -> RunningRegistry:
    """A registry with an in-memory store on a Unix socket."""
    return await registries()


@pytest.fixture
async def channel(registry: RunningRegistry) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to ``registry``'s Unix socket."""
    async with grpc.aio.insecure_channel(registry.target()) as ch:
        yield ch


def service_watcher(stub: Any, template: NetworkService | None = None) -> Watcher:
    """Open a watching network service Find."""
    query = NetworkServiceQuery(network_service=template or NetworkService(), watch=True)
    return Watcher(stub, query)
