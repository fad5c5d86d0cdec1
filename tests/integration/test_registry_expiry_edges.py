"""Edge cases of endpoint expiry that the main tests do not reach: the exactness of a
client-given expiration time, and a refresh that lands while the sweeper is deleting a batch of
expired records (made deterministic with a store whose delete can be held)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import grpc

from api.proto.registry_pb2 import NetworkServiceEndpoint
from registry.app import Registry
from sdk.grpcutil import parse_address
from sdk.registry.core import Event, Query
from sdk.registry.memory import MemoryStore
from tests.integration.conftest import WAIT, endpoint_stub, find_endpoints, nse


async def test_client_expiration_time_is_kept_exactly(channel: grpc.aio.Channel) -> None:
    """A future expiration_time within max_ttl is the client's choice: it must come back (and be
    stored) unchanged, to the nanosecond, as NSM's registry does."""
    record = nse("exact", ["svc"])
    record.expiration_time.seconds = int(time.time()) + 120
    record.expiration_time.nanos = 250_000_000
    reply: NetworkServiceEndpoint = await endpoint_stub(channel).Register(record, timeout=WAIT)
    assert reply.expiration_time == record.expiration_time
    found = await find_endpoints(endpoint_stub(channel), nse("exact", url=""))
    assert found["exact"].expiration_time == record.expiration_time


class HeldDeleteStore(MemoryStore):
    """A memory store whose delete of one name waits until the test releases it."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.delete_reached = asyncio.Event()
        self.release = asyncio.Event()

    async def delete(self, kind: str, name: str) -> bool:
        if name == self.held and not self.release.is_set():
            self.delete_reached.set()
            await self.release.wait()
        return await super().delete(kind, name)


async def test_refresh_during_an_expiry_sweep_is_kept(short_tmp: Path) -> None:
    """Two endpoints expire together; while the sweeper is deleting the first (its store delete
    is held), the second is refreshed. The refreshed endpoint is no longer expired, so the
    sweeper must not delete it (nor announce it deleted)."""
    store = HeldDeleteStore(held="nse-a")
    registry = Registry(store, default_ttl=60.0)
    await registry.start([parse_address(f"unix://{short_tmp}/r.sock")])
    watch = cast(
        AsyncGenerator[Event[NetworkServiceEndpoint], None],
        registry.endpoints.find(Query(NetworkServiceEndpoint(), watch=True)),
    )
    try:
        expires_in = 0.3
        await registry.endpoints.register(nse("nse-a", ["svc"], expires_in=expires_in))
        await registry.endpoints.register(nse("nse-b", ["svc"], expires_in=expires_in))
        seen = [await anext(watch) for _ in range(2)]
        assert [e.record.name for e in seen] == ["nse-a", "nse-b"]

        async with asyncio.timeout(WAIT):
            await store.delete_reached.wait()  # the sweeper is removing nse-a
        await registry.endpoints.register(nse("nse-b", ["svc"], expires_in=60))
        refreshed = await anext(watch)
        assert (refreshed.record.name, refreshed.deleted) == ("nse-b", False)
        store.release.set()

        async with asyncio.timeout(WAIT):
            gone = await anext(watch)
        assert (gone.record.name, gone.deleted) == ("nse-a", True)
        # Let the sweeper finish its batch: it runs without suspending once nse-a is deleted,
        # and a gRPC round trip through the registry takes many loop iterations.
        async with grpc.aio.insecure_channel(registry.addresses[0].target) as ch:
            remaining = await find_endpoints(endpoint_stub(ch))
        assert set(remaining) == {"nse-b"}, "the refreshed endpoint was deleted by the sweeper"
        assert registry.endpoint_records.get("nse-b") is not None
    finally:
        await watch.aclose()
        await registry.stop(grace=0)
