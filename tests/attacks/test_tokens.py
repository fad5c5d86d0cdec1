"""Path tokens as bearer tokens, malformed claims and malleable signatures (issue 12, items 2, 8
and 9), against real nsmgrs, forwarders and endpoints (fake kernels) over their real sockets.

(A close signed after the SVID expired, with a back-dated ``iat``, needs a CA older than the
grace: ``tests/unit/test_token_hardening.py`` runs it on a settable clock.)

The attacker is a local workload: it can reach the nsmgr's unix socket and has somehow seen a
victim's path tokens (the nsmgr's monitor used to hand them to every local caller). Every refusal
is checked for its exact status and that nothing was created, changed or closed.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection, Mechanism, PathSegment
from api.proto.networkservice_pb2 import NetworkServiceRequest
from nsc.client import VWireClient
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.token import SignPathSegment
from sdk.security import token
from sdk.security.source import FileSvidSource
from sdk.security.svid import Svid
from tests.integration.fabric import Fabric, FakeNode, Identities, temporary_fabric

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwa-", identities=True) as fab:
        yield fab


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def svid_of(fabric: Fabric, kind: str, name: str) -> Svid:
    assert fabric.identities is not None
    return FileSvidSource(fabric.identities.root / "identities" / kind / name).current().svid


def issued(fabric: Fabric, node: FakeNode, name: str) -> str:
    """Make a client ``name`` (its namespace and SVID); returns the name."""
    fabric.client(node, name)
    return name


def signed(svid: Svid, header: str, claims: bytes) -> str:
    """A token with this header part and claims text, properly signed by ``svid`` (low-S)."""
    signing_input = f"{header}.{b64(claims)}"
    r, s = decode_dss_signature(svid.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    s = min(s, N - s)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def kernel(node: FakeNode, workload: str) -> Mechanism:
    return Mechanism(cls="LOCAL", type="KERNEL", parameters={
        "inodeURL": f"/var/run/netns/{node.name}-{workload}", "name": "nsm0"})


def replay(victim: Connection, mechanism: Mechanism) -> NetworkServiceRequest:
    """The victim's connection as its client sends it, with another mechanism."""
    request = NetworkServiceRequest()
    request.connection.CopyFrom(victim)
    request.connection.path.index = 0
    request.mechanism_preferences.append(mechanism)
    return request


def fresh_request(node: FakeNode, workload: str, tok: str) -> NetworkServiceRequest:
    """A first request of ``workload`` whose segment carries ``tok``."""
    request = NetworkServiceRequest()
    conn = request.connection
    conn.id = str(uuid.uuid4())
    conn.network_service = "db"
    conn.path.path_segments.append(PathSegment(name=workload, id=conn.id, token=tok))
    request.mechanism_preferences.append(kernel(node, workload))
    return request


async def refused(url: str, message: NetworkServiceRequest | Connection) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(url.replace("unix:///", "unix:/")) as ch:
        stub = networkservice_pb2_grpc.NetworkServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if isinstance(message, Connection):
                await stub.Close(message, timeout=5)
            else:
                await stub.Request(message, timeout=5)
    return caught.value


async def state(fabric: Fabric) -> list[object]:
    """Everything a request could create or a close remove: vWire links on every node, the
    connections every nsmgr and endpoint holds."""
    found: list[object] = []
    for node in fabric.nodes:
        found += sorted(link.name for link in await node.kernel.list_links(None))
        assert node.nsmgr is not None
        found += sorted(node.nsmgr.monitor.connections)
    for endpoint in fabric.endpoints:
        found += sorted(endpoint.monitor.connections)
    return found


async def victim(fabric: Fabric, nodes: int = 1) -> tuple[VWireClient, Connection]:
    await fabric.start(nodes)
    await fabric.endpoint(fabric.nodes[-1], "nse-a")
    client = fabric.client(fabric.nodes[0], "victim", labels={"app": "web"})
    return client, await client.connect()


async def test_a_replayed_client_token_with_another_namespace_is_refused(fabric: Fabric) -> None:
    client, conn = await victim(fabric)
    node = fabric.nodes[0]
    node.workload("evil")
    before = await state(fabric)

    error = await refused(node.nsmgr_url, replay(conn, kernel(node, "evil")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "signed for other mechanism preferences" in (error.details() or "")

    other_interface = kernel(node, "victim")
    other_interface.parameters["name"] = "evil0"
    error = await refused(node.nsmgr_url, replay(conn, other_interface))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert await state(fabric) == before, "nothing created, nothing moved"
    assert await client.connect(), "the victim's own refresh still works"


async def test_a_replayed_client_token_with_other_labels_or_service_is_refused(
    fabric: Fabric,
) -> None:
    _, conn = await victim(fabric)
    node = fabric.nodes[0]
    before = await state(fabric)
    relabelled = replay(conn, kernel(node, "victim"))
    relabelled.connection.labels["app"] = "admin"
    other_service = replay(conn, kernel(node, "victim"))
    other_service.connection.network_service = "secret"
    for forged in (relabelled, other_service):
        error = await refused(node.nsmgr_url, forged)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
        assert "another network service or other labels" in (error.details() or "")
    assert await state(fabric) == before


async def test_a_close_splicing_own_token_before_a_victims_is_refused(fabric: Fabric) -> None:
    _, conn = await victim(fabric)
    node = fabric.nodes[0]
    attacker = svid_of(fabric, "nsc", issued(fabric, node, "evil"))
    # Path at the endpoint: victim, nsmgr, forwarder, nsmgr (index 3). The attacker signs the
    # first segment itself and keeps the victim's later tokens.
    close = Connection()
    close.CopyFrom(conn)
    close.path.index = 3
    close.id = close.path.path_segments[3].id
    first = close.path.path_segments[0]
    first.token, _ = token.sign(attacker, Identities.spiffe_id("nsmgr", "nsmgr-n1"), first.id)
    before = await state(fabric)
    error = await refused(f"unix://{node.dir}/nse-a.sock", close)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "does not chain to the token before it" in (error.details() or "")
    assert await state(fabric) == before, "the endpoint kept the connection"


def malformed_claims(client: str, nsmgr: str, cid: str) -> list[tuple[str, bytes]]:
    base = f'"sub":"{client}","aud":"{nsmgr}","cid":"{cid}","prev":""'
    return [
        ("iat=10**400", f'{{{base},"iat":{10**400},"exp":1}}'.encode()),
        ("iat=NaN", f'{{{base},"iat":NaN,"exp":1}}'.encode()),
        ("iat=1e300", f'{{{base},"iat":1e300,"exp":1e300}}'.encode()),
        ("exp=-Infinity", f'{{{base},"iat":1,"exp":-Infinity}}'.encode()),
    ]


async def test_malformed_claims_are_unauthenticated_with_a_reason(fabric: Fabric) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-a")
    svid = svid_of(fabric, "nsc", issued(fabric, node, "evil"))
    nsmgr_id = Identities.spiffe_id("nsmgr", "nsmgr-n1")
    real = token.sign(svid, nsmgr_id, "x")[0].split(".")[0]
    request = fresh_request(node, "evil", "")
    cid = request.connection.id
    cases = [(name, signed(svid, real, claims))
             for name, claims in malformed_claims(str(svid.spiffe_id), nsmgr_id, cid)]
    nested = b64(b'{"alg":"ES256","x":' + b"[" * 11_000)
    cases.append(("header nested 11,000 deep", signed(svid, nested, b'{"iat":1}')))
    before = await state(fabric)
    for name, tok in cases:
        request.connection.path.path_segments[0].token = tok
        error = await refused(node.nsmgr_url, request)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error)
        assert "path token" in (error.details() or ""), (name, error.details())
        close = Connection()
        close.CopyFrom(request.connection)
        error = await refused(node.nsmgr_url, close)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error)
    assert await state(fabric) == before


async def test_malleated_signatures_are_refused(fabric: Fabric) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-a")
    fabric.client(node, "evil")  # issues its SVID
    nsmgr_id = Identities.spiffe_id("nsmgr", "nsmgr-n1")
    before = await state(fabric)
    assert fabric.identities is not None

    request = fresh_request(node, "evil", "")
    source = FileSvidSource(fabric.identities.root / "identities" / "nsc" / "evil")
    sent = await NetworkServiceChain([SignPathSegment(source, nsmgr_id), Sent()]).run_request(
        request)  # signed as the real client signs (bound to the request where that exists)
    honest = sent.path.path_segments[0].token
    head, body, sig = honest.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    assert s <= N // 2, "signing produces low-S"
    high_s = f"{head}.{body}.{b64(r.to_bytes(32, 'big') + (N - s).to_bytes(32, 'big'))}"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])  # 86 characters: the last one carries 2 bits, 4 unused
    odd = f"{head}.{body}.{sig[:-1]}{alphabet[last | 1]}"
    assert base64.urlsafe_b64decode(odd.split(".")[2] + "==") == raw, "same bytes, other text"
    for forged, why in [(high_s, "low-S"), (odd, "canonical base64url")]:
        request.connection.path.path_segments[0].token = forged
        error = await refused(node.nsmgr_url, request)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert why in (error.details() or ""), error.details()
    assert await state(fabric) == before


class Sent(NetworkServiceElement):
    """Terminal: answers with the request's connection as it would go on the wire."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        return request.connection
