"""Registry takeover through a node's nsmgr (issue 12, item 3), against a real nsmgr with an SVID
and a real domain registry, over the nsmgr's real unix socket and TCP (mTLS) listeners.

A local registrant proves who it is with a registration token: a JWS signed with its SVID for
exactly the record it sends (audience ``vwire:registration``, ``cid`` = action, kind and the
record's SHA-256), in the gRPC metadata entry ``vwire-registration-token``. The tokens here are
made from that wire contract directly, so the attacks are the same against old and new code.
Every refusal is checked for its exact status, and that the registry, the nsmgr's local endpoints
and its forwarders are unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import (
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
    NetworkServiceQuery,
)
from nsmgr.app import Nsmgr
from nsmgr.settings import NsmgrSettings
from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import parse_address
from sdk.security import token
from sdk.security.source import FileSvidSource
from sdk.security.svid import Svid
from sdk.security.tls import secure_channel
from tests.integration.fabric import Identities

WAIT = 5.0
VICTIM = Identities.spiffe_id("nse", "victim")
MALLORY = Identities.spiffe_id("nse", "mallory")
NSMGR = Identities.spiffe_id("nsmgr", "nsmgr-n1")
Metadata = tuple[tuple[str, str], ...]


def proof(svid: Svid, action: str, kind: str, record: Message) -> Metadata:
    """The registration token of ``svid``'s owner for ``action`` of exactly ``record``."""
    digest = hashlib.sha256(record.SerializeToString(deterministic=True)).digest()
    cid = f"registry/{action}/{kind}/{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"
    signed, _ = token.sign(svid, "vwire:registration", cid, lifetime=60)
    return (("vwire-registration-token", signed),)


@dataclass
class Node:
    """A domain registry and one node's nsmgr (with an SVID), and channels to them."""

    root: Path
    identities: Identities
    registry: Registry
    nsmgr: Nsmgr
    local: grpc.aio.Channel      # the nsmgr's unix socket
    upstream: grpc.aio.Channel   # the domain registry, directly

    def svid(self, kind: str, name: str) -> Svid:
        return FileSvidSource(Path(self.identities.issue(kind, name))).current().svid

    def endpoints(self) -> Any:  # the generated stubs are typed for sync channels
        return registry_pb2_grpc.NetworkServiceEndpointRegistryStub(self.local)

    def services(self) -> Any:
        return registry_pb2_grpc.NetworkServiceRegistryStub(self.local)

    async def stored(self) -> dict[str, NetworkServiceEndpoint]:
        """What the domain registry holds, by name."""
        stub: Any = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(self.upstream)
        query = NetworkServiceEndpointQuery(network_service_endpoint=NetworkServiceEndpoint())
        return {r.network_service_endpoint.name: r.network_service_endpoint
                async for r in stub.Find(query, timeout=WAIT)}

    async def stored_services(self) -> dict[str, NetworkService]:
        stub: Any = registry_pb2_grpc.NetworkServiceRegistryStub(self.upstream)
        query = NetworkServiceQuery(network_service=NetworkService())
        return {r.network_service.name: r.network_service
                async for r in stub.Find(query, timeout=WAIT)}

    async def restart_nsmgr(self) -> None:
        await self.nsmgr.stop()
        self.nsmgr = Nsmgr(self.nsmgr.config)
        await self.nsmgr.start()


def endpoint(name: str, url: str, services: tuple[str, ...] = ("db",),
             path_ids: tuple[str, ...] = ()) -> NetworkServiceEndpoint:
    return NetworkServiceEndpoint(name=name, url=url, network_service_names=list(services),
                                  path_ids=list(path_ids))


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwt-takeover-") as tmp:
        root = Path(tmp)
        identities = Identities(root)
        registry = Registry(open_store("memory://"))
        registry_url = f"unix://{root}/registry.sock"
        await registry.start([parse_address(registry_url)])
        nsmgr = Nsmgr(NsmgrSettings(
            name="nsmgr-n1", listen=[f"unix://{root}/nsmgr.sock", "tcp://127.0.0.1:0"],
            registry=registry_url, svid_dir=identities.issue("nsmgr", "nsmgr-n1"),
        ))
        await nsmgr.start()
        local = grpc.aio.insecure_channel(f"unix:{root}/nsmgr.sock")
        upstream = grpc.aio.insecure_channel(f"unix:{root}/registry.sock")
        found = Node(root, identities, registry, nsmgr, local, upstream)
        try:
            yield found
        finally:
            await local.close()
            await upstream.close()
            await found.nsmgr.stop()
            await registry.stop(grace=0)


async def register_victim(node: Node) -> tuple[NetworkServiceEndpoint, Svid]:
    victim = node.svid("nse", "victim")
    record = endpoint("victim", f"unix://{node.root}/victim.sock", path_ids=(VICTIM,))
    reply = await node.endpoints().Register(
        record, timeout=WAIT, metadata=proof(victim, "register", "nse", record))
    assert list(reply.path_ids) == [VICTIM, NSMGR]
    assert node.nsmgr.local_endpoints.url("victim") == record.url
    return record, victim


async def refused(call: Any, code: grpc.StatusCode, *words: str) -> str:
    """Await ``call`` (a gRPC call object); assert it fails with ``code`` and ``words``."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    for word in words:
        assert word in details, details
    return details


async def mallory_moves_the_victim(node: Node) -> None:
    """Mallory, with an SVID of her own, registers the victim's endpoint name at her address:
    refused as the victim's."""
    mallory = node.svid("nse", "mallory")
    hijack = endpoint("victim", f"unix://{node.root}/mallory.sock", path_ids=(MALLORY,))
    await refused(node.endpoints().Register(
        hijack, timeout=WAIT, metadata=proof(mallory, "register", "nse", hijack)),
        grpc.StatusCode.PERMISSION_DENIED, "belongs to", VICTIM)


async def test_another_identity_cannot_move_an_endpoint_to_its_own_address(node: Node) -> None:
    original, _ = await register_victim(node)
    before = await node.stored()
    await mallory_moves_the_victim(node)
    unsigned = endpoint("victim", f"unix://{node.root}/mallory.sock")
    await refused(node.endpoints().Register(unsigned, timeout=WAIT),
                  grpc.StatusCode.UNAUTHENTICATED, "vwire-registration-token")

    assert await node.stored() == before
    assert node.nsmgr.local_endpoints.url("victim") == original.url
    assert node.nsmgr.local_endpoints.spiffe_id("victim") == VICTIM


async def test_a_token_for_one_record_does_not_authorise_another(node: Node) -> None:
    original, victim = await register_victim(node)
    before = await node.stored()
    seen = endpoint("victim", original.url, path_ids=(VICTIM,))
    replayed = proof(victim, "register", "nse", seen)  # say, copied from a refresh
    moved = endpoint("victim", f"unix://{node.root}/mallory.sock", path_ids=(VICTIM,))
    await refused(node.endpoints().Register(moved, timeout=WAIT, metadata=replayed),
                  grpc.StatusCode.PERMISSION_DENIED, "does not authorise")
    await refused(node.endpoints().Unregister(seen, timeout=WAIT, metadata=replayed),
                  grpc.StatusCode.PERMISSION_DENIED, "does not authorise")
    assert await node.stored() == before
    assert node.nsmgr.local_endpoints.url("victim") == original.url


async def test_another_identity_cannot_unregister_an_endpoint(node: Node) -> None:
    original, victim = await register_victim(node)
    before = await node.stored()
    mallory = node.svid("nse", "mallory")
    await refused(node.endpoints().Unregister(
        original, timeout=WAIT, metadata=proof(mallory, "unregister", "nse", original)),
        grpc.StatusCode.PERMISSION_DENIED, "belongs to")
    await refused(node.endpoints().Unregister(original, timeout=WAIT),
                  grpc.StatusCode.UNAUTHENTICATED)
    assert await node.stored() == before
    assert node.nsmgr.local_endpoints.url("victim") == original.url

    await node.endpoints().Unregister(  # the owner still can
        original, timeout=WAIT, metadata=proof(victim, "unregister", "nse", original))
    assert "victim" not in await node.stored()
    assert node.nsmgr.local_endpoints.url("victim") is None


async def test_only_forwarder_identities_register_forwarders(node: Node) -> None:
    mallory = node.svid("nse", "mallory")
    fake = endpoint("forwarder-evil", f"unix://{node.root}/evil.sock", ("forwarder",),
                    (MALLORY,))
    await refused(node.endpoints().Register(
        fake, timeout=WAIT, metadata=proof(mallory, "register", "nse", fake)),
        grpc.StatusCode.PERMISSION_DENIED, "only forwarder identities")
    mixed = endpoint("forwarder-mixed", f"unix://{node.root}/evil.sock", ("forwarder", "db"),
                     (MALLORY,))
    await refused(node.endpoints().Register(
        mixed, timeout=WAIT, metadata=proof(mallory, "register", "nse", mixed)),
        grpc.StatusCode.PERMISSION_DENIED, "alone")
    assert node.nsmgr.forwarders.names() == set()
    assert await node.stored() == {}

    forwarder_id = Identities.spiffe_id("forwarder", "forwarder-n1")
    real = endpoint("forwarder-n1", f"unix://{node.root}/fwd.sock", ("forwarder",),
                    (forwarder_id,))
    svid = node.svid("forwarder", "forwarder-n1")
    reply = await node.endpoints().Register(
        real, timeout=WAIT, metadata=proof(svid, "register", "nse", real))
    assert list(reply.path_ids) == [forwarder_id, NSMGR]
    assert node.nsmgr.forwarders.names() == {"forwarder-n1"}
    # another forwarder identity cannot take that forwarder's place either
    other = node.svid("forwarder", "forwarder-n2")
    hijack = endpoint("forwarder-n1", f"unix://{node.root}/evil.sock", ("forwarder",))
    await refused(node.endpoints().Register(
        hijack, timeout=WAIT, metadata=proof(other, "register", "nse", hijack)),
        grpc.StatusCode.PERMISSION_DENIED, "belongs to")
    assert node.nsmgr.forwarders.url("forwarder-n1") == real.url


async def test_path_ids_may_name_only_the_registrant(node: Node) -> None:
    mallory = node.svid("nse", "mallory")
    for ids in [(VICTIM,), (VICTIM, MALLORY), (MALLORY, VICTIM), (NSMGR,)]:
        record = endpoint("mallory", f"unix://{node.root}/mallory.sock", path_ids=ids)
        await refused(node.endpoints().Register(
            record, timeout=WAIT, metadata=proof(mallory, "register", "nse", record)),
            grpc.StatusCode.PERMISSION_DENIED, "path_ids names")
        service = NetworkService(name="db", payload="IP", path_ids=list(ids))
        await refused(node.services().Register(
            service, timeout=WAIT, metadata=proof(mallory, "register", "ns", service)),
            grpc.StatusCode.PERMISSION_DENIED, "path_ids names")
    assert await node.stored() == {}
    assert await node.stored_services() == {}
    assert node.nsmgr.local_endpoints.names() == set()


async def test_remote_nodes_get_no_registry_api_over_tcp(node: Node) -> None:
    _, _ = await register_victim(node)
    before = await node.stored()
    other_nsmgr = FileSvidSource(Path(node.identities.issue("nsmgr", "nsmgr-n2")))
    tcp = next(a for a in node.nsmgr.bound if a.scheme == "tcp")
    async with secure_channel(tcp, other_nsmgr) as ch:
        stub: Any = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(ch)
        services: Any = registry_pb2_grpc.NetworkServiceRegistryStub(ch)
        record = endpoint("victim", "tcp://10.0.0.66:5000")
        svid = other_nsmgr.current().svid
        await refused(stub.Register(record, timeout=WAIT,
                                    metadata=proof(svid, "register", "nse", record)),
                      grpc.StatusCode.PERMISSION_DENIED, "unix socket", "registry directly")
        await refused(stub.Unregister(record, timeout=WAIT,
                                      metadata=proof(svid, "unregister", "nse", record)),
                      grpc.StatusCode.PERMISSION_DENIED, "unix socket")
        query = NetworkServiceEndpointQuery(network_service_endpoint=NetworkServiceEndpoint())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [r async for r in stub.Find(query, timeout=WAIT)]
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await refused(services.Register(NetworkService(name="db"), timeout=WAIT),
                      grpc.StatusCode.PERMISSION_DENIED, "unix socket")
    assert await node.stored() == before
    assert await node.stored_services() == {}


async def test_ownership_holds_after_the_nsmgr_restarts(node: Node) -> None:
    original, victim = await register_victim(node)
    await node.restart_nsmgr()
    before = await node.stored()
    await mallory_moves_the_victim(node)
    assert await node.stored() == before
    assert node.nsmgr.local_endpoints.url("victim") is None
    # the owner refreshes as before
    await node.endpoints().Register(
        original, timeout=WAIT, metadata=proof(victim, "register", "nse", original))
    assert node.nsmgr.local_endpoints.url("victim") == original.url


async def test_services_registered_through_the_nsmgr_are_owned_by_the_registrant(
    node: Node,
) -> None:
    victim = node.svid("nse", "victim")
    service = NetworkService(name="db", payload="IP")
    reply = await node.services().Register(
        service, timeout=WAIT, metadata=proof(victim, "register", "ns", service))
    mallory = node.svid("nse", "mallory")
    changed = NetworkService(name="db", payload="ETHERNET")
    await refused(node.services().Register(
        changed, timeout=WAIT, metadata=proof(mallory, "register", "ns", changed)),
        grpc.StatusCode.PERMISSION_DENIED, "belongs to")
    assert (await node.stored_services())["db"].payload == "IP"
    assert list(reply.path_ids) == [VICTIM, NSMGR]  # how a restarted nsmgr recalls the owner
    await node.restart_nsmgr()
    await refused(node.services().Register(
        changed, timeout=WAIT, metadata=proof(mallory, "register", "ns", changed)),
        grpc.StatusCode.PERMISSION_DENIED, "belongs to")
    assert (await node.stored_services())["db"].payload == "IP"
