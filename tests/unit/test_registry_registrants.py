"""Unit tests of the registry elements that prove, own and bound registrations: registration
tokens (VerifyRegistrant), first-hop path_ids, stored owners and their migration, quotas and the
watch byte bound. Real SVIDs from a test CA, real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from registry.store import open_store
from sdk.chain import CallContext
from sdk.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from sdk.registry.core import Event, Query, RegistryChain, RegistryCursor, RegistryElement
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.ownership import Ownership
from sdk.registry.pathids import RecordPathIds
from sdk.registry.persist import Persist
from sdk.registry.quota import Quota
from sdk.registry.registrant import AUDIENCE, REGISTRANT, VerifyRegistrant, attach, binding
from sdk.registry.server import TOKEN
from sdk.registry.store import StoredRecord
from sdk.registry.watch import Watch
from sdk.security import token
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource

TD = "example.org"
NSMGR = f"spiffe://{TD}/nsmgr/n1"
ALICE = f"spiffe://{TD}/nse/alice"
BOB = f"spiffe://{TD}/nse/bob"
LOCAL = "unix:/run/vwire/nsmgr.sock"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, now=time.time() - 3600)


def source(ca: CertificateAuthority, spiffe_id: str) -> CaSvidSource:
    return CaSvidSource(ca, spiffe_id)


def signed(ctx_token: str, peer: str = LOCAL) -> CallContext:
    ctx = CallContext(peer=peer)
    ctx.values[TOKEN] = ctx_token
    return ctx


class Seen(RegistryElement[NetworkServiceEndpoint]):
    """Records who the chain said the registrant was."""

    def __init__(self) -> None:
        self.registrants: list[str | None] = []

    async def register(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> NetworkServiceEndpoint:
        self.registrants.append(next.ctx.values.get(REGISTRANT))
        return record


async def test_a_registration_token_proves_its_signer(ca: CertificateAuthority) -> None:
    seen = Seen()
    chain = RegistryChain([VerifyRegistrant(ENDPOINT, source(ca, NSMGR)), seen])
    alice = source(ca, ALICE)
    record = NetworkServiceEndpoint(name="db", url="unix:///a.sock")
    (_, proof), = attach(alice, "register", ENDPOINT, record)
    await chain.register(record, signed(proof))
    await chain.register(record, CallContext())  # in-process: trusted, nothing to prove
    assert seen.registrants == [ALICE, None]


async def test_bad_registration_tokens_are_refused(ca: CertificateAuthority) -> None:
    chain = RegistryChain([VerifyRegistrant(ENDPOINT, source(ca, NSMGR)), Seen()])
    alice = source(ca, ALICE).current().svid
    record = NetworkServiceEndpoint(name="db", url="unix:///a.sock")
    cid = binding("register", ENDPOINT, record)

    with pytest.raises(Unauthenticated, match="did not prove who it is"):
        await chain.register(record, CallContext(peer=LOCAL))
    expired, _ = token.sign(alice, AUDIENCE, cid, lifetime=60, now=time.time() - 120)
    with pytest.raises(Unauthenticated, match="expired"):
        await chain.register(record, signed(expired))
    foreign = CertificateAuthority.create(TD, now=time.time() - 3600).issue(ALICE)
    forged, _ = token.sign(foreign, AUDIENCE, cid)
    with pytest.raises(Unauthenticated, match="signer rejected"):
        await chain.register(record, signed(forged))
    path_token, _ = token.sign(alice, NSMGR, cid)  # a path token is not a registration token
    with pytest.raises(PermissionDenied, match="does not authorise"):
        await chain.register(record, signed(path_token))
    for_unregister, _ = token.sign(alice, AUDIENCE, binding("unregister", ENDPOINT, record))
    with pytest.raises(PermissionDenied, match="does not authorise"):
        await chain.register(record, signed(for_unregister))
    good, _ = token.sign(alice, AUDIENCE, cid)
    with pytest.raises(PermissionDenied, match=r"signed by .*alice but the caller is .*bob"):
        await chain.register(record, signed(good, peer=BOB))  # mTLS peer is someone else


async def test_a_workload_names_only_itself_in_path_ids(ca: CertificateAuthority) -> None:
    chain: RegistryChain[NetworkService] = RegistryChain(
        [RecordPathIds(source(ca, NSMGR), first_hop=True)])

    def as_alice() -> CallContext:
        ctx = CallContext(peer=LOCAL)
        ctx.values[REGISTRANT] = ALICE
        return ctx

    for ids in ([], [ALICE], [ALICE, NSMGR]):
        stored = await chain.register(NetworkService(name="db", path_ids=ids), as_alice())
        assert list(stored.path_ids) == [ALICE, NSMGR]
    for ids in ([BOB], [ALICE, BOB], [NSMGR], [ALICE, NSMGR, NSMGR]):
        with pytest.raises(PermissionDenied, match="path_ids names"):
            await chain.register(NetworkService(name="db", path_ids=ids), as_alice())
    with pytest.raises(PermissionDenied, match="without a proven identity"):
        await chain.register(NetworkService(name="db", path_ids=[ALICE]), CallContext(peer=LOCAL))


@pytest.fixture
async def sqlite_path(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "registry.db"


async def test_rows_from_schema_1_get_their_owner_from_path_ids(sqlite_path: Path) -> None:
    with sqlite3.connect(sqlite_path) as db:  # what the previous version wrote
        db.execute("CREATE TABLE records (kind TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT "
                   "NULL, expires_at REAL, PRIMARY KEY (kind, name)) WITHOUT ROWID")
        record = NetworkServiceEndpoint(name="db", url="tcp://10.0.0.1:1", path_ids=[ALICE, NSMGR])
        db.execute("INSERT INTO records VALUES ('nse', 'db', ?, NULL)",
                   (record.SerializeToString(),))
        db.execute("PRAGMA user_version = 1")
    store = open_store(f"sqlite:///{sqlite_path}")
    records = Persist(ENDPOINT, store)
    await records.load()
    assert records.owner("db") == NSMGR
    await store.put(StoredRecord("nse", "other", record.SerializeToString(), None, BOB))
    assert [r.owner for r in await store.load("nse", time.time())] == [None, BOB]
    await store.close()


def owned_chain(records: Persist[NetworkServiceEndpoint], max_records: int,
                max_bytes: int = 1 << 20) -> RegistryChain[NetworkServiceEndpoint]:
    async def recall(name: str) -> str | None:
        return records.owner(name)

    return RegistryChain([Ownership(ENDPOINT, recall),
                          Quota(ENDPOINT, records, max_records, max_bytes), records])


async def test_concurrent_registrations_cannot_overshoot_a_quota() -> None:
    store = open_store("memory://")
    records = Persist(ENDPOINT, store)
    chain = owned_chain(records, max_records=5)
    results = await asyncio.gather(*(
        chain.register(NetworkServiceEndpoint(name=f"e{i}", url="tcp://10.0.0.1:1"),
                       CallContext(peer=ALICE))
        for i in range(20)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, ResourceExhausted)]
    assert len(refused) == 15 and len(records) == 5
    assert records.usage(ALICE)[0] == 5
    # a refresh of an own record is not counted again; another identity has its own quota
    await chain.register(NetworkServiceEndpoint(name="e0", url="tcp://10.0.0.1:2"),
                         CallContext(peer=ALICE))
    await chain.register(NetworkServiceEndpoint(name="b0", url="tcp://10.0.0.2:1"),
                         CallContext(peer=BOB))
    await chain.unregister(NetworkServiceEndpoint(name="e0"), CallContext(peer=ALICE))
    assert records.usage(ALICE)[0] == 4
    await store.close()


async def test_a_watch_is_cut_by_bytes_and_its_backlog_freed() -> None:
    watch: Watch[NetworkService] = Watch(SERVICE, max_backlog=100, max_backlog_bytes=10_000)
    store = open_store("memory://")
    chain = RegistryChain([watch, Persist(SERVICE, store)])
    stream = chain.find(Query(NetworkService(name="first"), watch=True))
    pending = asyncio.ensure_future(anext(stream))  # subscribes, then lists or waits
    await chain.register(NetworkService(name="first"))
    first: Event[NetworkService] = await pending  # listed or watched: subscribed now
    assert first.record.name == "first" and watch.queued_bytes == 0
    # New names: a re-registration also holds the record it replaced (and counts it).
    big = [NetworkService(name=f"big{i}", path_ids=["spiffe://example.org/" + "x" * 900])
           for i in range(11)]
    for record in big[:10]:
        await chain.register(record)
    assert watch.watchers == 1 and 9_000 < watch.queued_bytes <= 10_000
    await chain.register(big[10])  # over the limit: cut, the backlog dropped
    assert watch.watchers == 0 and watch.queued_bytes == 0
    with pytest.raises(ResourceExhausted, match="10000 bytes"):
        await anext(stream)
    await store.close()
