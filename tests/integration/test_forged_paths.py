"""Forged requests get no further than the nsmgr (fake kernels, real servers).

A workload must not skip the nsmgr's endpoint choice and the authorization in front of it by
naming a forwarder as the hop before the nsmgr (with or without path tokens), nor by calling the
forwarder itself (without a route, with a route it signed, or with a real path of its own sent
somewhere else), nor reach an endpoint of another service by naming it; and an endpoint serves
only what it registered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection, Mechanism, PathSegment
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.route import Route
from sdk.security import token
from sdk.security.source import FileSvidSource
from sdk.security.svid import Svid
from tests.integration.fabric import Fabric, FakeNode, Identities, temporary_fabric


def request_for(node: FakeNode, client: str, service: str, endpoint: str = "",
                path: Sequence[tuple[str, str]] = ()) -> NetworkServiceRequest:
    """A request as ``client`` (its namespace made with ``node.workload``) would send it, with
    ``path`` (name, id) already in it."""
    request = NetworkServiceRequest()
    conn = request.connection
    conn.network_service, conn.network_service_endpoint_name = service, endpoint
    for name, segment_id in path:
        conn.path.path_segments.append(PathSegment(name=name, id=segment_id))
    conn.path.index = max(0, len(path) - 1)
    conn.id = path[-1][1] if path else ""
    request.mechanism_preferences.append(Mechanism(
        cls="LOCAL", type="KERNEL",
        parameters={"inodeURL": f"/var/run/netns/{node.name}-{client}", "name": "nsm0"}))
    return request


async def call(url: str, request: NetworkServiceRequest,
               route: Route | None = None) -> Connection:
    metadata = list(route.headers().items()) if route is not None else []
    async with grpc.aio.insecure_channel(url.replace("unix:///", "unix:/")) as ch:
        reply: Connection = await networkservice_pb2_grpc.NetworkServiceStub(ch).Request(
            request, timeout=5, metadata=metadata)
        return reply


async def refused(url: str, request: NetworkServiceRequest,
                  route: Route | None = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(url, request, route)
    return caught.value


def forwarder_url(node: FakeNode) -> str:
    return f"unix://{node.dir}/forwarder.sock"


async def programmed(fabric: Fabric, node: FakeNode) -> list[str]:
    """Every vWire link on the node and every connection the endpoints know."""
    links = [link.name for link in await node.kernel.list_links(None, alias_prefix="vwire:")]
    return links + [c for e in fabric.endpoints for c in e.monitor.connections]


async def test_a_forged_forwarder_hop_does_not_skip_authorization(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text("version: 1\nrequests:\n  - rule: ops-only\n    services: [db]\n"
                      "    labels: {team: ops}\n")
    async with temporary_fabric("vwp-", authorization=str(policy)) as fabric:
        await fabric.start(1)
        node = fabric.nodes[0]
        await fabric.endpoint(node, "nse-a")
        node.workload("web")
        honest = request_for(node, "web", "db")
        honest.connection.labels["team"] = "web"
        assert (await refused(node.nsmgr_url, honest)).code() == grpc.StatusCode.PERMISSION_DENIED

        # Posing as relayed from a forwarder: served as from another node, still authorized.
        forged = request_for(node, "web", "db", "nse-a",
                             path=[("web", "w-1"), ("forwarder-n1", "f-1")])
        forged.connection.labels["team"] = "web"
        error = await refused(node.nsmgr_url, forged)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no rule allows" in (error.details() or "")
        # Straight to the forwarder: it takes requests with its nsmgr's route only.
        direct = request_for(node, "web", "db", "nse-a", path=[("web", "w-2")])
        error = await refused(forwarder_url(node), direct)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "carries no route" in (error.details() or "")
        assert await programmed(fabric, node) == []


@pytest.fixture
async def signed_fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwp-", identities=True) as fabric:
        yield fabric


async def connected(fabric: Fabric) -> tuple[FakeNode, Connection, Svid]:
    """One node with endpoints nse-a (db) and nse-s (secret), client c1 connected to db: its
    node, its connection and its SVID (what a workload has to forge with)."""
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-a")
    await fabric.endpoint(node, "nse-s", service="secret")
    conn = await fabric.client(node, "c1").connect()
    assert fabric.identities is not None
    svid = FileSvidSource(
        fabric.identities.root / "identities" / "nsc" / "c1").current().svid
    return node, conn, svid


async def test_a_forwarder_hop_signed_by_a_workload_is_refused(signed_fabric: Fabric) -> None:
    fabric = signed_fabric
    node, conn, svid = await connected(fabric)
    before = await programmed(fabric, node)
    me, nsmgr = Identities.spiffe_id("nsc", "c1"), Identities.spiffe_id("nsmgr", "nsmgr-n1")
    handed = conn.path.path_segments[1].id  # the client's own connection, handed to the forwarder

    for endpoint, service, why in [
        ("nse-a", "db", "signed by " + me),  # what it has already: the signer gives it away
        # another endpoint: a workload's signature on a relay's segment is refused first
        ("nse-s", "secret", "which may not relay requests"),
    ]:
        forged = request_for(node, "c1", service, endpoint, path=[
            ("c1", conn.path.path_segments[0].id), ("nsmgr-n1", handed), ("forwarder-n1", "f")])
        previous = ""
        for i, segment in enumerate(forged.connection.path.path_segments):
            audience = nsmgr if i == 2 else me  # a chain of its own signatures
            segment.token, _ = token.sign(svid, audience, segment.id, previous)
            previous = segment.token
        error = await refused(node.nsmgr_url, forged)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
        assert why in (error.details() or "")
    assert await programmed(fabric, node) == before


async def test_a_forwarder_goes_only_where_its_nsmgr_signed(signed_fabric: Fabric) -> None:
    fabric = signed_fabric
    node, conn, svid = await connected(fabric)
    before = await programmed(fabric, node)
    me = Identities.spiffe_id("nsc", "c1")
    forwarder = Identities.spiffe_id("forwarder", "forwarder-n1")
    secret = Route(f"unix://{node.dir}/nse-s.sock", Identities.spiffe_id("nse", "nse-s"),
                   "LOCAL")

    # The workload signs for the forwarder itself, route bound and all: not its nsmgr.
    own = request_for(node, "c1", "db", "nse-s", path=[("c1", "c-own")])
    own.connection.path.path_segments[0].token, _ = token.sign(
        svid, forwarder, "c-own", route=secret.binding())
    error = await refused(forwarder_url(node), own, secret)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert f"comes from {me}, not from this forwarder's nsmgr" in (error.details() or "")

    # Its real path, signed by the nsmgr for nse-a, sent with a route to another endpoint.
    replayed = request_for(node, "c1", "db", "nse-a")
    replayed.connection.CopyFrom(conn)
    del replayed.connection.path.path_segments[2:]
    replayed.connection.path.index = 1
    replayed.connection.id = conn.path.path_segments[1].id
    error = await refused(forwarder_url(node), replayed, secret)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "not the one the nsmgr signed" in (error.details() or "")
    assert await programmed(fabric, node) == before


async def test_a_named_endpoint_must_provide_the_service() -> None:
    async with temporary_fabric("vwp-") as fabric:
        await fabric.start(1)
        node = fabric.nodes[0]
        await fabric.endpoint(node, "nse-a")
        await fabric.endpoint(node, "nse-s", service="secret")
        node.workload("web")

        named = request_for(node, "web", "db", "nse-s")
        error = await refused(node.nsmgr_url, named)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'nse-s' does not provide network service 'db' (it provides secret)" in (
            error.details() or "")

        direct = request_for(node, "web", "db")
        error = await refused(f"unix://{node.dir}/nse-s.sock", direct)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not provide 'db'; it provides secret" in (error.details() or "")
        assert await programmed(fabric, node) == []

        allowed = await call(node.nsmgr_url, request_for(node, "web", "db", "nse-a"))
        assert allowed.network_service_endpoint_name == "nse-a"
        async with grpc.aio.insecure_channel(f"unix:{node.dir}/nsmgr.sock") as ch:
            await networkservice_pb2_grpc.NetworkServiceStub(ch).Close(allowed, timeout=5)
        assert await programmed(fabric, node) == []
