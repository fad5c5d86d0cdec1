"""Authorization cannot be skipped by forging a relayed path (issue 12, item 1).

The attack that worked: a client whom the policy denies ``secret`` sent a path of two segments,
both signed by itself (the first with itself as audience), naming an endpoint of ``secret``.
The nsmgr authorized and checked the named endpoint only at path index ≤ 1, so it took the
request for one relayed from another node, and the endpoint saw the denied client as its client.
Now every segment after the client's must be signed by a relay (nsmgr or forwarder), every node
authorizes the client of the verified path, and so does the endpoint; over the unix socket and
over mTLS alike.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.grpcutil import parse_address
from sdk.security import token
from sdk.security.source import FileSvidSource
from sdk.security.tls import SecureChannelFactory
from tests.integration.fabric import Fabric, FakeNode, Identities, temporary_fabric
from tests.integration.test_forged_paths import programmed, request_for

POLICY = """version: 1
requests:
  - rule: everyone-db
    services: [db]
    clients: ["**"]
  - rule: ops-secret
    services: [secret]
    clients: [spiffe://test.vwire/nsc/ops]
"""


@pytest.fixture
async def fabric(tmp_path: Path) -> AsyncIterator[Fabric]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with temporary_fabric("vwf-", identities=True, authorization=str(policy)) as fab:
        yield fab


def forged(fabric: Fabric, node: FakeNode, client: str) -> NetworkServiceRequest:
    """``client``'s request for ``secret`` at ``nse-s`` with a second segment of its own."""
    assert fabric.identities is not None
    svid = FileSvidSource(fabric.identities.root / "identities" / "nsc" / client).current().svid
    me, nsmgr = Identities.spiffe_id("nsc", client), Identities.spiffe_id("nsmgr", "nsmgr-n1")
    request = request_for(node, client, "secret", "nse-s", path=[
        (client, str(uuid.uuid4())), (f"{client}-relay", str(uuid.uuid4()))])
    previous = ""
    for i, segment in enumerate(request.connection.path.path_segments):
        segment.token, _ = token.sign(svid, me if i == 0 else nsmgr, segment.id, previous)
        previous = segment.token
    request.connection.path.index = 1
    return request


async def refused(channel: grpc.aio.Channel, request: NetworkServiceRequest) -> (
    grpc.aio.AioRpcError
):
    from api.proto import networkservice_pb2_grpc
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await networkservice_pb2_grpc.NetworkServiceStub(channel).Request(request, timeout=5)
    return caught.value


async def test_a_self_signed_relay_segment_does_not_skip_the_policy(fabric: Fabric) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-a")
    await fabric.endpoint(node, "nse-s", service="secret")
    fabric.client(node, "web")  # its namespace and SVID
    before = await programmed(fabric, node)

    async with grpc.aio.insecure_channel(f"unix:{node.dir}/nsmgr.sock") as channel:
        error = await refused(channel, forged(fabric, node, "web"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "which may not relay requests" in (error.details() or ""), error

    assert fabric.identities is not None
    svids = FileSvidSource(fabric.identities.root / "identities" / "nsc" / "web")
    assert node.nsmgr is not None
    tcp = next(a.target for a in node.nsmgr.bound if a.scheme == "tcp")
    channel = SecureChannelFactory(svids)(parse_address(f"tcp://{tcp}", "nsmgr"))
    try:
        error = await refused(channel, forged(fabric, node, "web"))
    finally:
        await channel.close()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert await programmed(fabric, node) == before, "nothing programmed, nothing reached nse-s"


async def test_every_node_and_the_endpoint_hold_the_client_to_the_policy(fabric: Fabric) -> None:
    await fabric.start(2)
    n1, n2 = fabric.nodes
    await fabric.endpoint(n2, "nse-s", service="secret")
    denied = fabric.client(n1, "web", service="secret")
    with pytest.raises(Exception) as caught:
        await denied.connect()
    assert "no rule allows spiffe://test.vwire/nsc/web" in str(caught.value), caught.value
    allowed = fabric.client(n1, "ops", service="secret")
    conn = await allowed.connect()
    assert conn.network_service_endpoint_name == "nse-s"
