"""Discover asks the registry for the service record and its providers at the same time.

Each lookup is a registry round trip (~2 ms per pass here); asked one after the other, a setup
waits for both. The registries below hold each lookup until the other one has arrived too, so
lookups made one after the other never get an answer (bounded by a timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.errors import Unavailable
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.discover import CANDIDATES, Discover
from sdk.registry.core import Event, Query, RegistryChain, RegistryCursor, RegistryElement
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.memory import MemoryStore
from sdk.registry.persist import Persist

PROVIDER = NetworkServiceEndpoint(name="nse-1", network_service_names=["db"],
                                  url="unix:///nowhere/nse-1.sock")


class Meet(RegistryElement[Any]):
    """Holds a find until every party of ``barrier`` has arrived (at most 5 s), or fails it."""

    def __init__(self, barrier: asyncio.Barrier, fail: bool = False) -> None:
        self.barrier = barrier
        self.fail = fail
        self.cancelled = False

    async def find(self, query: Query[Any], next: RegistryCursor[Any]) -> AsyncIterator[Event[Any]]:
        try:
            async with asyncio.timeout(5):
                await self.barrier.wait()
            if self.fail:
                raise Unavailable("registry: down")
            await asyncio.sleep(5)  # the failing lookup above cancels this one
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        async for event in next.find(query):
            yield event


class Meeting(Meet):
    async def find(self, query: Query[Any], next: RegistryCursor[Any]) -> AsyncIterator[Event[Any]]:
        async with asyncio.timeout(5):
            await self.barrier.wait()
        async for event in next.find(query):
            yield event


class Keep(NetworkServiceElement):
    """Records what Discover left for the selection."""

    def __init__(self) -> None:
        self.found: list[str] = []

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.found = [c.endpoint.name for c in next.ctx.values[CANDIDATES]]
        return await next.request(request)


def _request() -> NetworkServiceRequest:
    return NetworkServiceRequest(connection=Connection(id="c1", network_service="db"))


async def test_service_and_providers_are_looked_up_at_once() -> None:
    barrier = asyncio.Barrier(2)
    services: RegistryChain[NetworkService] = RegistryChain(
        [Meeting(barrier), Persist(SERVICE, MemoryStore())])
    endpoints: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
        [Meeting(barrier), Persist(ENDPOINT, MemoryStore())])
    await endpoints.register(PROVIDER)
    keep = Keep()
    chain = NetworkServiceChain([Discover(services, endpoints), keep])
    await asyncio.wait_for(chain.run_request(_request(), CallContext()), 10)
    assert keep.found == ["nse-1"]


async def test_a_failed_lookup_is_raised_as_it_is_and_cancels_the_other() -> None:
    barrier = asyncio.Barrier(2)
    slow = Meet(barrier)
    services: RegistryChain[NetworkService] = RegistryChain(
        [Meet(barrier, fail=True), Persist(SERVICE, MemoryStore())])
    endpoints: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
        [slow, Persist(ENDPOINT, MemoryStore())])
    chain = NetworkServiceChain([Discover(services, endpoints)])
    with pytest.raises(Unavailable, match="registry: down"):
        await asyncio.wait_for(chain.run_request(_request(), CallContext()), 10)
    assert slow.cancelled
