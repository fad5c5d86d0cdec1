"""FindCache in front of a real registry over gRPC: repeated finds are answered from a watch
without reaching the registry, a deleted endpoint is never returned once its deletion event has
arrived, new registrations show up, a half-delivered listing is not served, and a watch that
ends (registry stopped) forgets the key so nothing stale is served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import FabricError
from sdk.registry.cache import FindCache
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryChain, RegistryCursor, RegistryElement
from sdk.registry.kinds import ENDPOINT
from tests.integration.conftest import WAIT, RunningRegistry, StartRegistry, nse

NSE = NetworkServiceEndpoint
T = TypeVar("T")


class Spy(RegistryElement[NSE]):
    """Counts the plain finds that pass; notes each deleted event once the element in front of
    it has taken it (it asks for the next one only after applying it)."""

    def __init__(self) -> None:
        self.finds = 0
        self.deleted_taken: set[str] = set()
        self.changed = asyncio.Event()

    async def find(self, query: Query[NSE], next: RegistryCursor[NSE]) -> AsyncIterator[Event[NSE]]:
        if not query.watch:
            self.finds += 1
        async for event in next.find(query):
            yield event
            if event.deleted:
                self.deleted_taken.add(event.record.name)
            self.changed.set()


async def names(chain: RegistryChain[NSE], service: str) -> list[str]:
    query = Query(NSE(network_service_names=[service]))
    return sorted([event.record.name async for event in chain.find(query)])


async def until(what: str, check: Callable[[], object], spy: Spy | None = None) -> None:
    """Wait (bounded) until ``check()`` is true, woken by the spy's events or every 10 ms."""
    async with asyncio.timeout(WAIT):
        while not check():
            if spy is not None:
                spy.changed.clear()
                try:
                    async with asyncio.timeout(0.01):
                        await spy.changed.wait()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.01)
    assert check(), what


@pytest.fixture
async def running(registries: StartRegistry) -> RunningRegistry:
    return await registries()


async def _warm(chain: RegistryChain[NSE], spy: Spy, service: str) -> None:
    """Find until an answer comes from the cache (bounded)."""
    async def served() -> bool:
        before = spy.finds
        await names(chain, service)
        return spy.finds == before

    for _ in range(int(WAIT / 0.01)):
        if await served():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("finds were never answered from the cache")


@asynccontextmanager
async def _cached_db(running: RunningRegistry) -> AsyncIterator[
        tuple[RegistryChain[NSE], Spy, FindCache[NSE], RegistryChain[NSE]]]:
    """nse-a and nse-b registered for db; yields the direct chain, the spy, the cache and the
    chain through it (cache → spy → registry); the cache is closed on the way out."""
    async with grpc.aio.insecure_channel(running.target()) as channel:
        direct = RegistryChain([RemoteRegistry(ENDPOINT, channel)])
        await direct.register(nse("nse-a", ["db"]))
        await direct.register(nse("nse-b", ["db"]))
        spy, cache = Spy(), FindCache(ENDPOINT)
        try:
            yield direct, spy, cache, RegistryChain([cache, spy, RemoteRegistry(ENDPOINT, channel)])
        finally:
            await cache.close()


async def test_finds_are_answered_from_the_watch_and_follow_changes(
    running: RunningRegistry,
) -> None:
    async with _cached_db(running) as (direct, spy, cache, chain):
        assert await names(chain, "db") == ["nse-a", "nse-b"]
        await _warm(chain, spy, "db")
        before = spy.finds
        for _ in range(10):
            assert await names(chain, "db") == ["nse-a", "nse-b"]
        assert spy.finds == before  # none reached the registry
        # a record from the cache is the reader's own copy
        async for event in chain.find(Query(NSE(network_service_names=["db"]))):
            event.record.url = "tcp://changed:1"
        assert "tcp://changed:1" not in str(await names(chain, "db"))

        await direct.unregister(nse("nse-b", ["db"]))
        await until("the deletion reached the cache",
                    lambda: "nse-b" in spy.deleted_taken, spy)
        assert await names(chain, "db") == ["nse-a"]  # never again after its deletion

        await direct.register(nse("nse-c", ["db"]))
        answers: list[list[str]] = []

        async def seen_c() -> None:
            async with asyncio.timeout(WAIT):
                while not answers or answers[-1] != ["nse-a", "nse-c"]:
                    answers.append(await names(chain, "db"))
                    await asyncio.sleep(0.01)

        await seen_c()
        assert spy.finds == before  # still from the watch
    assert cache.keys() == 0


async def test_an_endpoint_that_drops_the_service_is_no_longer_served(
    running: RunningRegistry,
) -> None:
    async with _cached_db(running) as (direct, spy, _cache, chain):
        await _warm(chain, spy, "db")
        before = spy.finds
        await direct.register(nse("nse-b", ["cache"]))  # re-registered without db
        await until("the change reached the cache",
                    lambda: "nse-b" in spy.deleted_taken, spy)
        assert await names(chain, "db") == ["nse-a"]
        assert spy.finds == before  # answered from the watch, not by asking again


async def test_a_watch_that_ends_forgets_the_key(registries: StartRegistry) -> None:
    running = await registries()
    async with grpc.aio.insecure_channel(running.target()) as channel:
        await RegistryChain([RemoteRegistry(ENDPOINT, channel)]).register(nse("nse-a", ["db"]))
        spy, cache = Spy(), FindCache(ENDPOINT)
        chain = RegistryChain([cache, spy, RemoteRegistry(ENDPOINT, channel)])
        try:
            await _warm(chain, spy, "db")
            assert cache.keys() == 1
            await running.registry.stop(grace=0.1)
            await until("the key is forgotten", lambda: cache.keys() == 0)
            with pytest.raises(FabricError):  # asks the (stopped) registry: nothing stale
                await names(chain, "db")
        finally:
            await cache.close()


class Scripted(RegistryElement[NSE]):
    """A registry stand-in: plain finds answer ``records``; the watch lists what the test
    feeds it, one event at a time."""

    def __init__(self, records: list[NSE]) -> None:
        self.records = records
        self.feed: asyncio.Queue[Event[NSE]] = asyncio.Queue()
        self.finds = 0

    async def find(self, query: Query[NSE], next: RegistryCursor[NSE]) -> AsyncIterator[Event[NSE]]:
        if not query.watch:
            self.finds += 1
            for record in self.records:
                yield Event(record)
            return
        while True:
            yield await self.feed.get()


async def test_a_half_delivered_listing_is_not_served() -> None:
    a, b = nse("nse-a", ["db"]), nse("nse-b", ["db"])
    scripted, cache = Scripted([a, b]), FindCache(ENDPOINT)
    chain = RegistryChain([cache, scripted])
    try:
        assert await names(chain, "db") == ["nse-a", "nse-b"]
        scripted.feed.put_nowait(Event(a))  # the watch has listed only nse-a so far
        await until("nse-a delivered", lambda: scripted.feed.empty())
        for expected_finds in (2, 3):
            assert await names(chain, "db") == ["nse-a", "nse-b"]
            assert scripted.finds == expected_finds  # passed through: not ready
        scripted.feed.put_nowait(Event(b))
        await until("nse-b delivered", lambda: scripted.feed.empty())
        assert await names(chain, "db") == ["nse-a", "nse-b"]
        assert scripted.finds == 3  # served from the watch
        scripted.feed.put_nowait(Event(a, deleted=True))
        await until("deletion delivered", lambda: scripted.feed.empty())
        assert await names(chain, "db") == ["nse-b"]
        # a registration through the element forgets every key: the next find passes through
        await chain.register(nse("nse-d", ["db"]))
        assert cache.keys() == 0
        assert await names(chain, "db") == ["nse-a", "nse-b"]
        assert scripted.finds == 4
    finally:
        await cache.close()


async def test_keys_are_bounded_and_age_out() -> None:
    now = [0.0]
    scripted = Scripted([])
    cache = FindCache(ENDPOINT, max_keys=2, max_age=10.0, clock=lambda: now[0])
    chain = RegistryChain([cache, scripted])
    try:
        for service in ("a", "b", "c"):
            await names(chain, service)
        assert cache.keys() == 2  # the least recently used one was dropped, its watch cancelled
        await names(chain, "c")  # ready (nothing to wait for): served
        finds = scripted.finds
        await names(chain, "c")
        assert scripted.finds == finds
        now[0] = 11.0
        await names(chain, "c")  # too old: asked again, with a new watch
        assert scripted.finds == finds + 1
    finally:
        await cache.close()
    assert cache.keys() == 0
