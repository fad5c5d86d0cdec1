"""Registry replicas over one real etcd: shared records and watches, expiry announced once per
replica, leases that expire records with no replica running, a client (``Replicas``) whose watch
moves to another replica without losing or repeating a change, and the refusals that make it
list again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from registry.store import open_store
from registry.store.etcd import LEASE_SLACK, EtcdStore
from sdk.errors import FailedPrecondition, NotFound, Unavailable
from sdk.registry.core import Event, Query, RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.registry.replicas import Replicas
from sdk.registry.store import StoredRecord
from tests.integration.conftest import (
    WAIT,
    RunningRegistry,
    StartRegistry,
    endpoint_stub,
    endpoint_watcher,
    find_endpoints,
    nse,
)


def named(response: Any) -> tuple[str, bool]:
    return response.network_service_endpoint.name, response.deleted


async def test_replicas_share_records_and_every_change(
    registries: StartRegistry, etcd_url: str
) -> None:
    a, b = await registries(etcd_url), await registries(etcd_url)
    async with grpc.aio.insecure_channel(a.target()) as ca, \
            grpc.aio.insecure_channel(b.target()) as cb:
        on_a, on_b = endpoint_stub(ca), endpoint_stub(cb)
        watch_a, watch_b = endpoint_watcher(on_a), endpoint_watcher(on_b)
        try:
            await on_a.Register(nse("nse-1", ["svc"]), timeout=WAIT)
            first_a, first_b = await watch_a.next(), await watch_b.next()
            assert named(first_a) == named(first_b) == ("nse-1", False)
            assert first_a.revision == first_b.revision > 0  # the store's revision, the same
            # Read on the other replica: it applies a change and announces it in one step, so
            # once its watchers saw it, so does its find (before, it may not have had it yet).
            assert set(await find_endpoints(on_b)) == {"nse-1"}

            await on_b.Unregister(nse("nse-1", ["svc"]), timeout=WAIT)
            gone_a, gone_b = await watch_a.next(), await watch_b.next()
            assert named(gone_a) == named(gone_b) == ("nse-1", True)
            assert gone_a.revision == gone_b.revision > first_a.revision
            assert await find_endpoints(on_a) == {}
            # Each change came once per replica: the next event is the next change.
            await on_a.Register(nse("nse-2", ["svc"]), timeout=WAIT)
            assert named(await watch_a.next()) == named(await watch_b.next()) == ("nse-2", False)
        finally:
            watch_a.close()
            watch_b.close()


async def test_expiry_is_announced_once_by_each_replica(
    registries: StartRegistry, etcd_url: str
) -> None:
    a, b = await registries(etcd_url, default_ttl=0.5), await registries(etcd_url)
    async with grpc.aio.insecure_channel(a.target()) as ca, \
            grpc.aio.insecure_channel(b.target()) as cb:
        on_a, on_b = endpoint_stub(ca), endpoint_stub(cb)
        watch_a, watch_b = endpoint_watcher(on_a), endpoint_watcher(on_b)
        try:
            reply = await on_a.Register(nse("short", ["svc"]), timeout=WAIT)
            expires = reply.expiration_time.ToNanoseconds() / 1e9
            for watch in (watch_a, watch_b):
                assert named(await watch.next()) == ("short", False)
                assert named(await watch.next(within=3.0)) == ("short", True)
            assert time.time() >= expires
            assert await find_endpoints(on_b) == {}
            await on_b.Register(nse("after", ["svc"]), timeout=WAIT)
            for watch in (watch_a, watch_b):  # no second deletion in between
                assert named(await watch.next()) == ("after", False)
        finally:
            watch_a.close()
            watch_b.close()


async def test_leases_expire_records_when_no_replica_runs(etcd_url: str) -> None:
    store = open_store(etcd_url)
    assert isinstance(store, EtcdStore)
    try:
        revision, _ = await store.snapshot(time.time())
        await store.put(StoredRecord("nse", "orphan", b"x", time.time() + 1))
        changes = store.changes(revision)
        try:
            async with asyncio.timeout(1 + LEASE_SLACK + 3):
                put = await anext(changes)
                gone = await anext(changes)
        finally:
            await changes.aclose()
        assert (put.name, put.record is not None) == ("orphan", True)
        assert (gone.name, gone.record) == ("orphan", None)
        assert await store.load("nse", 0) == []
    finally:
        await store.close()


@pytest.fixture
async def two_replicas(
    registries: StartRegistry, etcd_url: str
) -> AsyncIterator[tuple[RunningRegistry, RunningRegistry, RegistryChain[NetworkServiceEndpoint]]]:
    a, b = await registries(etcd_url), await registries(etcd_url)
    async with grpc.aio.insecure_channel(a.target()) as ca, \
            grpc.aio.insecure_channel(b.target()) as cb:
        yield a, b, RegistryChain([Replicas(ENDPOINT, [ca, cb])])


async def next_event(events: AsyncIterator[Event[NetworkServiceEndpoint]]) -> tuple[str, bool]:
    async with asyncio.timeout(WAIT):
        event = await anext(events)
    return event.record.name, event.deleted


async def test_watch_moves_to_another_replica_without_loss_or_repeat(
    two_replicas: tuple[RunningRegistry, RunningRegistry, RegistryChain[NetworkServiceEndpoint]],
) -> None:
    a, b, client = two_replicas
    await client.register(nse("before", ["svc"]))
    events = client.find(Query(NetworkServiceEndpoint(), watch=True))
    try:
        assert await next_event(events) == ("before", False)
        await client.register(nse("one", ["svc"]))
        assert await next_event(events) == ("one", False)
        await a.registry.stop(grace=0)  # the replica the client uses goes away
        # Changes while the client moves, made through the client (now on b) and on b directly.
        await client.register(nse("two", ["svc"]))
        await client.unregister(nse("one", ["svc"]))
        async with grpc.aio.insecure_channel(b.target()) as cb:
            await endpoint_stub(cb).Register(nse("three", ["svc"]), timeout=WAIT)
        assert [await next_event(events) for _ in range(3)] == [
            ("two", False), ("one", True), ("three", False)
        ]
        await client.register(nse("four", ["svc"]))  # nothing repeated before it
        assert await next_event(events) == ("four", False)
    finally:
        await events.aclose()


async def test_resume_older_than_the_history_is_refused_and_the_client_lists_again(
    two_replicas: tuple[RunningRegistry, RunningRegistry, RegistryChain[NetworkServiceEndpoint]],
) -> None:
    a, b, client = two_replicas
    await client.register(nse("kept", ["svc"]))
    b.registry.endpoint_watch.floor = 10**12  # as if b had forgotten every change so far
    async with grpc.aio.insecure_channel(b.target()) as cb:
        direct = RegistryChain([Replicas(ENDPOINT, [cb])])
        with pytest.raises(FailedPrecondition, match="Find again without resume_revision"):
            await anext(direct.find(Query(NetworkServiceEndpoint(), True, resume=1)))
    events = client.find(Query(NetworkServiceEndpoint(), watch=True))
    try:
        assert await next_event(events) == ("kept", False)
        await a.registry.stop(grace=0)
        await client.register(nse("new", ["svc"]))
        # b cannot resume: the client lists again (the kept record repeats), nothing is lost.
        assert sorted([await next_event(events) for _ in range(2)]) == [
            ("kept", False), ("new", False)
        ]
    finally:
        await events.aclose()


async def test_unary_calls_fail_over_and_a_lone_dead_replica_is_unavailable(
    two_replicas: tuple[RunningRegistry, RunningRegistry, RegistryChain[NetworkServiceEndpoint]],
) -> None:
    a, _b, client = two_replicas
    await a.registry.stop(grace=0)
    stored = await client.register(nse("x", ["svc"]))
    assert stored.name == "x"
    await client.unregister(nse("x", ["svc"]))
    with pytest.raises(NotFound):
        await client.unregister(nse("x", ["svc"]))
    async with grpc.aio.insecure_channel(a.target()) as ca:
        with pytest.raises(Unavailable):
            await RegistryChain([Replicas(ENDPOINT, [ca], rounds=1)]).register(nse("y", ["svc"]))
