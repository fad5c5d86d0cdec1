"""Path tokens through the real processes' chains (fake kernels): every hop signs for the next,
identities travel in registrations' ``path_ids``, and unsigned requests are refused early."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import Connection, ConnectionEvent, MonitorScopeSelector
from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsc.client import VWireClient
from nse.app import Endpoint
from nse.settings import NseSettings
from sdk.chain import CallContext
from sdk.errors import PermissionDenied, Unauthenticated
from sdk.grpcutil import channel
from sdk.registry.core import RegistryChain
from sdk.registry.pathids import RecordPathIds
from sdk.security import token
from sdk.security.source import CaSvidSource, FileSvidSource
from sdk.security.tls import secure_channel
from tests.integration.fabric import Fabric, FakeNode, Identities, temporary_fabric


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwt-", identities=True) as fab:
        yield fab


def chain_of(conn: Connection, fabric: Fabric) -> list[tuple[str, str]]:
    """(subject, audience) of every signed segment, each verified against the bundle."""
    assert fabric.identities is not None
    bundle = fabric.identities.ca.bundle
    pairs = []
    for i, segment in enumerate(conn.path.path_segments):
        if not segment.token:
            continue
        claims = token.verify(segment.token, bundle, segment_id=segment.id,
                              previous_token=conn.path.path_segments[i - 1].token if i else "")
        pairs.append((claims.subject, claims.audience))
    return pairs


async def vwires(node: FakeNode) -> list[str]:
    return [link.name for link in await node.kernel.list_links(None, alias_prefix="vwire:")]


def kinds_of(conn: Connection) -> list[str]:
    kind = {"c": "nsc", "n": "nsmgr", "f": "forwarder"}
    return [kind.get(s.name[0], "nse") if s.name != "nse-a" else "nse"
            for s in conn.path.path_segments]


async def test_every_hop_of_a_remote_path_signs_for_the_next(fabric: Fabric) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n2, "nse-a")
    client = fabric.client(n1, "c1")
    conn = await client.connect()
    names = [s.name for s in conn.path.path_segments]
    assert names == ["c1", "nsmgr-n1", "forwarder-n1", "nsmgr-n2", "forwarder-n2", "nse-a"]
    ids = [Identities.spiffe_id(kind, name) for kind, name in zip(kinds_of(conn), names,
                                                                 strict=True)]
    assert chain_of(conn, fabric) == list(itertools.pairwise(ids))

    refreshed = await client.connect()  # a refresh re-signs every segment, chained again
    assert chain_of(refreshed, fabric) == chain_of(conn, fabric)
    assert [s.token for s in refreshed.path.path_segments[:-1]] != [
        s.token for s in conn.path.path_segments[:-1]]

    await client.close()
    assert await vwires(n1) == [] and await vwires(n2) == []


async def test_a_local_path_is_signed_too(fabric: Fabric) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-a")
    conn = await fabric.client(node, "c1").connect()
    subjects = [subject for subject, _ in chain_of(conn, fabric)]
    expected = [("nsc", "c1"), ("nsmgr", "nsmgr-n1"), ("forwarder", "forwarder-n1")]
    assert subjects == [Identities.spiffe_id(kind, name) for kind, name in expected]


async def test_an_unsigned_request_is_refused_before_anything_is_programmed(
    fabric: Fabric,
) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n2, "nse-a")
    client = VWireClient(name="anon", nsmgr=n1.nsmgr_url, pool=fabric.pool,
                         netns_url=n1.workload("anon"), network_service="db",
                         interface="nsm0", request_timeout=5.0)
    with pytest.raises(Unauthenticated, match=r"path segment 0 \(anon\) is not signed"):
        await client.connect()
    assert await vwires(n1) == [] and await vwires(n2) == []
    assert n1.nsmgr is not None and not n1.nsmgr.monitor.connections


async def test_an_endpoint_without_identity_cannot_be_reached_with_tokens(
    fabric: Fabric,
) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    anonymous = Endpoint(NseSettings(
        name="nse-anon", services=["db"], listen=f"unix://{node.dir}/nse-anon.sock",
        nsmgr=node.nsmgr_url, netns=node.workload("nse-anon"), cidr=["10.61.0.0/16"],
    ))
    # It cannot even register through an nsmgr that has an identity: it has nothing to prove
    # who it is with, so no request can be routed to it.
    with pytest.raises(Unauthenticated, match="did not prove who it is"):
        await anonymous.start()
    assert node.nsmgr is not None and node.nsmgr.local_endpoints.names() == set()
    assert await vwires(node) == []


async def test_a_registrar_may_only_append_its_own_identity() -> None:
    identities = Identities(Path("/nonexistent"))  # only the CA is used
    nsmgr = CaSvidSource(identities.ca, Identities.spiffe_id("nsmgr", "n1"))
    chain: RegistryChain[NetworkServiceEndpoint] = RegistryChain([RecordPathIds(nsmgr)])
    caller = Identities.spiffe_id("nse", "db")

    stored = await chain.register(NetworkServiceEndpoint(name="db"), CallContext(peer=caller))
    assert list(stored.path_ids) == [caller, Identities.spiffe_id("nsmgr", "n1")]
    again = await chain.register(stored, CallContext())  # idempotent for its own ID
    assert list(again.path_ids) == list(stored.path_ids)

    forged = NetworkServiceEndpoint(name="db", path_ids=[Identities.spiffe_id("nse", "other")])
    with pytest.raises(PermissionDenied, match=r"ends with spiffe://test\.vwire/nse/other but the "
                       r"caller is spiffe://test\.vwire/nse/db"):
        await chain.register(forged, CallContext(peer=caller))


async def _monitored(address: str, svid_dir: Path | None) -> list[Connection]:
    selector = MonitorScopeSelector()
    if svid_dir is None:
        async with channel(address) as ch:
            stream = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
                selector, timeout=5)
            first = await stream.read()
    else:
        async with secure_channel(address, FileSvidSource(svid_dir)) as ch:
            stream = connection_pb2_grpc.MonitorConnectionStub(ch).MonitorConnections(
                selector, timeout=5)
            first = await stream.read()
    assert isinstance(first, ConnectionEvent)
    return list(first.connections.values())


async def test_remote_monitors_see_only_connections_whose_path_names_them(
    fabric: Fabric,
) -> None:
    await fabric.start(3)
    n1, n2, _ = fabric.nodes
    await fabric.endpoint(n2, "nse-a")
    conn = await fabric.client(n1, "c1").connect()
    assert n2.nsmgr is not None and fabric.identities is not None
    tcp = n2.nsmgr.advertise
    ids = fabric.identities.root / "identities" / "nsmgr"

    as_n1 = await _monitored(tcp, ids / "nsmgr-n1")
    assert as_n1 and {c.network_service for c in as_n1} == {"db"}, "n1 is in the path"
    assert await _monitored(tcp, ids / "nsmgr-n3") == [], "n3's nsmgr is not"
    local = await _monitored(n2.nsmgr_url, None)
    assert {c.id for c in local} == {c.id for c in as_n1}, "local callers see everything"
    assert conn.network_service_endpoint_name == "nse-a"
