"""The etcd store against real etcd clusters: its change stream survives the loss of the member
it is on (every member killed in turn, nothing lost or repeated), compacted history is
HistoryLost, and a registry replica that lost history loads the store again and tells its
watchers exactly what changed meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from lab.etcd import EtcdCluster
from registry.store import open_store
from registry.store.etcd import EtcdStore
from sdk.registry.store import Change, HistoryLost, StoredRecord
from tests.integration.conftest import (
    WAIT,
    StartRegistry,
    endpoint_stub,
    endpoint_watcher,
    find_endpoints,
    nse,
)


def etcd(url: str) -> EtcdStore:
    store = open_store(url)
    assert isinstance(store, EtcdStore)
    return store


def record(name: str) -> StoredRecord:
    return StoredRecord("nse", name, name.encode(), None, "spiffe://test/owner")


async def test_changes_go_on_while_each_member_is_killed_in_turn(tmp_path: Path) -> None:
    async with EtcdCluster(tmp_path / "etcd", members=3) as cluster:
        store = etcd(cluster.url)
        seen: list[Change] = []
        try:
            start, _ = await store.snapshot(time.time())

            async def follow() -> None:
                async for change in store.changes(start):
                    seen.append(change)
                    if len(seen) == len(cluster.nodes) + 1:
                        return

            follower = asyncio.create_task(follow())
            written = []
            for i, member in enumerate(cluster.nodes):
                cluster.kill(member)
                written.append(await store.put_at(record(f"nse-{i}")))  # two of three run
                await cluster.restart(member)
            written.append(await store.delete_at("nse", "nse-0"))
            async with asyncio.timeout(WAIT):
                await follower
        finally:
            await store.close()
    assert [c.revision for c in seen] == written  # each once, in order
    assert [(c.name, c.record is None) for c in seen] == [
        ("nse-0", False), ("nse-1", False), ("nse-2", False), ("nse-0", True)
    ]
    assert seen[0].record == record("nse-0")  # owner and data as written


async def compact(url: str, revision: int) -> None:
    host = url.removeprefix("etcd://").split("/")[0].split(",")[0]
    async with grpc.aio.insecure_channel(host) as channel:
        await rpc.KVStub(channel).Compact(rpc.CompactionRequest(revision=revision, physical=True),
                                          timeout=WAIT)


async def test_a_compacted_start_is_history_lost(etcd_url: str) -> None:
    store = etcd(etcd_url)
    try:
        old = await store.put_at(record("a"))
        now = await store.put_at(record("b"))
        await compact(etcd_url, now)
        changes = store.changes(old - 1)  # from "a" on: compacted away
        try:
            async with asyncio.timeout(WAIT):
                with contextlib.suppress(HistoryLost):
                    await anext(changes)
                    raise AssertionError("a compacted revision was followed")
        finally:
            await changes.aclose()
    finally:
        await store.close()


async def test_a_replica_that_lost_history_reloads_and_announces_the_difference(
    registries: StartRegistry, etcd_url: str
) -> None:
    running = await registries(etcd_url)
    registry: Any = running.registry
    async with grpc.aio.insecure_channel(running.target()) as ch:
        stub = endpoint_stub(ch)
        await stub.Register(nse("kept", ["svc"]), timeout=WAIT)
        await stub.Register(nse("removed", ["svc"]), timeout=WAIT)
        watch = endpoint_watcher(stub)
        try:
            listed = {(await watch.next()).network_service_endpoint.name for _ in range(2)}
            assert listed == {"kept", "removed"}
            registry._following.cancel()  # the replica stops following, as if cut off
            with contextlib.suppress(asyncio.CancelledError):
                await registry._following
            other = etcd(etcd_url)
            try:  # meanwhile, through another replica's store
                await other.delete_at("nse", "removed")
                added = nse("added", ["svc"])
                added.expiration_time.FromSeconds(int(time.time()) + 600)
                now = await other.put_at(StoredRecord(
                    "nse", "added", added.SerializeToString(), time.time() + 600, None))
                await compact(etcd_url, now)  # ... and the history it would need is gone
            finally:
                await other.close()
            registry._following = asyncio.create_task(registry.follower.run())
            changes = {(r.network_service_endpoint.name, r.deleted)
                       for r in [await watch.next(), await watch.next()]}
            assert changes == {("removed", True), ("added", False)}
            assert sorted(await find_endpoints(stub)) == ["added", "kept"]
        finally:
            watch.close()


async def test_a_stored_value_that_does_not_parse_is_ignored(
    registries: StartRegistry, etcd_url: str
) -> None:
    running = await registries(etcd_url)
    other = etcd(etcd_url)
    try:  # someone with access to etcd writes a record that is not a protobuf message
        await other.put_at(StoredRecord("nse", "garbage", b"\x0a\xff\xff", None, None))
    finally:
        await other.close()
    async with grpc.aio.insecure_channel(running.target()) as ch:
        stub = endpoint_stub(ch)
        await stub.Register(nse("after", ["svc"]), timeout=WAIT)  # the replica still follows
        assert sorted(await find_endpoints(stub)) == ["after"]


async def test_records_of_one_expiry_second_share_a_lease_and_a_lost_lease_is_granted_again(
    etcd_url: str,
) -> None:
    store = etcd(etcd_url)
    host = etcd_url.removeprefix("etcd://").split("/")[0]
    try:
        at = float(int(time.time()) + 600)
        for name in ("a", "b"):
            await store.put(StoredRecord("nse", name, b"x", at + 0.25, None))
        await store.put(StoredRecord("nse", "later", b"x", at + 5, None))
        async with grpc.aio.insecure_channel(host) as channel:
            kv, leases = rpc.KVStub(channel), rpc.LeaseStub(channel)
            prefix = store.prefix + b"nse/"
            reply: Any = await kv.Range(rpc.RangeRequest(key=prefix, range_end=prefix[:-1] + b"0"),
                                        timeout=WAIT)
            lease = {bytes(k.key).rsplit(b"/", 1)[1]: int(k.lease) for k in reply.kvs}
            assert lease[b"a"] == lease[b"b"] != lease[b"later"]
            assert all(lease.values())
            await leases.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease[b"later"]), timeout=WAIT)
        # "later" went with its lease; a record of that second is put on a new grant
        assert [r.name for r in await store.load("nse", 0)] == ["a", "b"]
        await store.put(StoredRecord("nse", "again", b"x", at + 5, None))
        assert [r.name for r in await store.load("nse", 0)] == ["a", "again", "b"]
    finally:
        await store.close()
